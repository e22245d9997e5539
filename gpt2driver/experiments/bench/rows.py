"""The bench's rows (the one row schema of :mod:`gpt2driver.tables.rows`) and its view: rows
ordered by batch then variant, the decode floor, and each row's ratios to naive, hf-eager and
hf-compiled at the same batch size."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

from ... import names
from ...files.checkpoint import ModelConfig
from ...tables.rows import GROUP_FIELDS, add_ratios, empty_row, frame
from ...tables.views import BENCH_COLUMNS
from ..floor import add_floor

PROMPT_LEN = 1  # one start token, as the default sweep
RATIOS = ("vs_naive", "vs_hf_eager", "vs_hf_compiled")


def base_row(variant: str, batch: int, gen: int, precision: str,
             point: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """An ok row of ``variant`` at ``batch`` with nothing measured yet; ``point`` gives the other
    point fields (model, checkpoint, warmup...)."""
    row = empty_row(point or {})
    row.update(variant=variant, batch=batch, gen=gen, prompt_len=row["prompt_len"] or PROMPT_LEN,
               precision=names.precision(precision), status="ok", wall_s=0.0,
               timed_by=names.timed_by(variant))
    return row


def skipped_row(variant: str, batch: int, gen: int, precision: str, reason: str,
                point: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    return {**base_row(variant, batch, gen, precision, point), "status": "skipped", "error": reason}


def failed_row(variant: str, batch: int, gen: int, precision: str, error: str,
               point: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    return {**base_row(variant, batch, gen, precision, point), "status": "failed", "error": error}


def engine_row(sweep_row: Dict[str, Any]) -> Dict[str, Any]:
    """A bench row from a point's row: the same row (the one schema), copied."""
    return dict(sweep_row)


def summarize(rows: Iterable[Dict[str, Any]], cfg: Optional[ModelConfig],
              copy_gbps: Optional[float]):
    """A DataFrame of the rows, ordered by batch then variant, with the floor (bytes per step,
    floor step time, % of floor) and the ratios of tokens/s to naive, hf-eager and hf-compiled
    at the same batch size (one bench runs on one GPU: the GPU name is not compared)."""
    rows = [dict(r) for r in rows]
    order = {v: k for k, v in enumerate(names.ALL_VARIANTS)}
    rows.sort(key=lambda r: (r["batch"], order.get(r["variant"], len(order))))
    if cfg is not None:
        add_floor(rows, lambda r: cfg, copy_gbps, PROMPT_LEN)
    keys = tuple(k for k in GROUP_FIELDS if k not in ("model", "checkpoint"))
    add_ratios(rows, RATIOS, keys=keys)
    return frame(rows, BENCH_COLUMNS)
