"""A sweep's rows as its view: the ratios (to naive, and each ablation to all-on, per kind of GPU
and group of comparable points) and, given a copy bandwidth, the decode floor."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from ..errors import CheckpointError
from ..files.checkpoint import ModelConfig, read_header
from ..tables.rows import add_ratios, frame as rows_frame
from ..tables.views import SWEEP_COLUMNS
from .floor import add_floor


def model_shape(row: Dict[str, Any]) -> Optional[ModelConfig]:
    """The shape of a row's model: its checkpoint's header, or the GPT-2 size; None if unknown."""
    try:
        if row.get("checkpoint"):
            return read_header(row["checkpoint"])[0]
        return ModelConfig.preset(row.get("model"))
    except CheckpointError:
        return None


def frame(rows: Iterable[Dict[str, Any]], copy_gbps: Optional[float] = None):
    """The sweep's DataFrame (SWEEP_COLUMNS) of the rows, in their order."""
    out: List[Dict[str, Any]] = [dict(r) for r in rows]
    add_ratios(out, ("vs_naive", "vs_all_on"))
    for r in out:
        r["speedup_vs_naive"] = r.pop("vs_naive")
    if copy_gbps:
        add_floor(out, model_shape, copy_gbps)
    return rows_frame(out, SWEEP_COLUMNS)
