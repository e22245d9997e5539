"""A config's grid: the product of its axes, in a fixed order, as points (dicts of the point fields
of :mod:`gpt2driver.tables.rows` plus a stable ``id``)."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping

from .. import names
from ..engine import preflight
from ..errors import CheckpointError, ConfigError, RequestError
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


def _shape(cfg: SweepConfig, model: str) -> ModelConfig:
    """The model's shape (a checkpoint's header, read once), checked by the pre-flight check."""
    what = "checkpoint" if cfg.checkpoint else "model"
    try:
        shape = read_header(cfg.checkpoint)[0] if cfg.checkpoint else ModelConfig.preset(model)
        preflight.check_shape(shape, model)
    except CheckpointError as e:
        raise ConfigError(f"{what}: {e}") from None
    return shape


def _check_point(shape: ModelConfig, model: str, prompt_len: int, gen: int) -> None:
    try:
        preflight.check_tokens(shape, preflight.Request(gen=gen, prompt_len=prompt_len))
    except RequestError as e:  # a request that does not fit the model: exit 2, as in run / validate / profile
        raise RequestError(f"{e} ({model})") from None


def excluded(point: Mapping[str, Any], rules: Iterable[Mapping[str, List[Any]]]) -> bool:
    """True when every field of one of the ``exclude`` rules holds one of its values."""
    return any(all(point.get(k) in values for k, values in rule.items()) for rule in rules)


def expand(cfg: SweepConfig) -> List[Dict[str, Any]]:
    """All points of a sweep, in a fixed order (precision, model, prompt_len, gen, batch, variant,
    ablation). Only the variants that take the switches get ablated points; the others run once
    (all on). Points matching an ``exclude`` rule are left out.

    A value given twice in an axis (``batch: [1, 1]``) makes one point: each id is run once.

    Raises ConfigError when the engine does not run the model's shape, RequestError (exit 2) when a
    point does not fit its context (prompt_len + gen > maxT): the pre-flight check of every point,
    before any runs.
    """
    s = cfg.sampling
    sampling = {"sampling": "greedy" if s["greedy"] else "sample",
                "temperature": s.get("temperature"), "top_k": s.get("top_k"), "top_p": s.get("top_p")}
    models = [cfg.checkpoint] if cfg.checkpoint else cfg.models
    points, seen = [], set()
    for precision, model in itertools.product(cfg.precisions, models):
        shape = _shape(cfg, model)
        for prompt_len, gen in itertools.product(cfg.prompt_len, cfg.gen):
            _check_point(shape, model, prompt_len, gen)
            for batch, variant in itertools.product(cfg.batch, cfg.variants):
                ablations = cfg.ablate if variant in names.ABLATABLE else [names.ALL_ON]
                for ablate in ablations:
                    p = {"model": Path(model).name if cfg.checkpoint else model,
                         "checkpoint": cfg.checkpoint, "precision": precision,
                         "variant": variant, "ablate": ablate, "batch": batch, "gen": gen,
                         "prompt_len": prompt_len, **sampling, "seed": cfg.seed,
                         "warmup": cfg.warmup, "repeat": cfg.repeat}
                    pid = point_id(p)
                    if not excluded(p, cfg.exclude) and pid not in seen:
                        seen.add(pid)
                        points.append({"id": pid, **p})
    return points


def group_points(points: Iterable[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Points grouped by what their ratios compare (GROUP_FIELDS: the variants and ablations of
    one model, precision, batch, gen, prompt length), in order of first appearance."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(tuple(p.get(k) for k in GROUP_FIELDS), []).append(p)
    return list(groups.values())
