"""A config's grid: the product of its axes, in a fixed order, as points (dicts of the point fields
of :mod:`gpt2driver.tables.rows` plus a stable ``id``)."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping

from .. import names
from ..errors import CheckpointError, ConfigError
from ..files.checkpoint import ModelConfig, read_header
from ..tables.rows import GROUP_FIELDS, POINT_FIELDS
from .configs import SweepConfig

__all__ = ["GROUP_FIELDS", "POINT_FIELDS", "expand", "point_id", "group_points"]


def point_id(point: Mapping[str, Any]) -> str:
    """A stable id of a point's measured fields (used to resume). ``ablate: none`` is left out
    of the hash, so that points of configs written before the ablation axis keep their ids."""
    fields = {k: point.get(k) for k in POINT_FIELDS}
    if (fields.get("ablate") or names.ALL_ON) == names.ALL_ON:
        del fields["ablate"]
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _max_seq_len(cfg: SweepConfig, model: str) -> int:
    try:
        if cfg.checkpoint:
            return read_header(cfg.checkpoint)[0].max_seq_len
        return ModelConfig.preset(model).max_seq_len
    except CheckpointError as e:
        raise ConfigError(f"{'checkpoint' if cfg.checkpoint else 'model'}: {e}") from None


def excluded(point: Mapping[str, Any], rules: Iterable[Mapping[str, List[Any]]]) -> bool:
    """True when every field of one of the ``exclude`` rules holds one of its values."""
    return any(all(point.get(k) in values for k, values in rule.items()) for rule in rules)


def expand(cfg: SweepConfig) -> List[Dict[str, Any]]:
    """All points of a sweep, in a fixed order (precision, model, prompt_len, gen, batch, variant,
    ablation). Only the variants that take the switches get ablated points; the others run once
    (all on). Points matching an ``exclude`` rule are left out.

    Raises ConfigError when a point does not fit the model's context (prompt_len + gen > maxT).
    """
    s = cfg.sampling
    sampling = {"sampling": "greedy" if s["greedy"] else "sample",
                "temperature": s.get("temperature"), "top_k": s.get("top_k"), "top_p": s.get("top_p")}
    models = [cfg.checkpoint] if cfg.checkpoint else cfg.models
    points = []
    for precision, model in itertools.product(cfg.precisions, models):
        max_t = _max_seq_len(cfg, model)
        for prompt_len, gen in itertools.product(cfg.prompt_len, cfg.gen):
            if prompt_len + gen > max_t:
                raise ConfigError(f"prompt_len + gen = {prompt_len} + {gen} = {prompt_len + gen} "
                                  f"exceeds the model's max_seq_len {max_t} ({model})")
            for batch, variant in itertools.product(cfg.batch, cfg.variants):
                ablations = cfg.ablate if variant in names.ABLATABLE else [names.ALL_ON]
                for ablate in ablations:
                    p = {"model": Path(model).name if cfg.checkpoint else model,
                         "checkpoint": cfg.checkpoint, "precision": precision,
                         "variant": variant, "ablate": ablate, "batch": batch, "gen": gen,
                         "prompt_len": prompt_len, **sampling, "seed": cfg.seed,
                         "warmup": cfg.warmup, "repeat": cfg.repeat}
                    if not excluded(p, cfg.exclude):
                        points.append({"id": point_id(p), **p})
    return points


def group_points(points: Iterable[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Points grouped by what their ratios compare (GROUP_FIELDS: the variants and ablations of
    one model, precision, batch, gen, prompt length), in order of first appearance."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(tuple(p.get(k) for k in GROUP_FIELDS), []).append(p)
    return list(groups.values())
