"""A sweep's rows as its view: the ratios (to naive, and each ablation to all-on, per kind of GPU
and group of comparable points) and, given a copy bandwidth, the decode floor."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from ..errors import CheckpointError, ExperimentError
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


def check_failed(df, what: str = "point") -> None:
    """ExperimentError (exit 1) saying how many rows of ``df`` failed, and which; nothing when
    none did (a skipped row, such as a peer that cannot run here, is not a failure). Sweep, compare and bench end with it, after
    their table is printed: their exit code tells whether everything ran."""
    if df is None or df.empty:
        return
    bad = df[df["status"] == "failed"].to_dict("records")
    if not bad:
        return
    which = ", ".join(f"{r['variant']} B={r['batch']}" for r in bad[:6])
    more = f", and {len(bad) - 6} more" if len(bad) > 6 else ""
    raise ExperimentError(f"{len(bad)} of {len(df)} {what}(s) failed: {which}{more} "
                          f"(see the table)")
