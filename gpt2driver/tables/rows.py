"""The one row schema: what a measured point records, for sweep, compare and bench alike.

A row is a flat dict: ``id``, the point's fields (what was asked), the result fields (what was
measured, or why not), and derived columns that the tables compute from the rows they show
(ratios to a peer row, the decode floor). ``results.jsonl`` holds rows with the first two groups;
the views (results.csv / results.json, the printed tables) add the derived ones.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .. import names
from ..protocol import tokens_per_s

# What a point asks for (the grid's axes). ``ablate``: none, a switch name, or names joined by +.
POINT_FIELDS = ("model", "checkpoint", "precision", "variant", "ablate", "batch", "gen",
                "prompt_len", "sampling", "temperature", "top_k", "top_p", "seed", "warmup",
                "repeat")
# What a row compares with its peers: rows equal in these (and on one kind of GPU) are one group.
GROUP_FIELDS = ("model", "checkpoint", "precision", "batch", "gen", "prompt_len")
# What was measured, and where.
RESULT_FIELDS = ("timed_by", "gpu", "gpu_index", "host", "cc", "status", "error",
                 "tokens_per_s_median", "tokens_per_s_min", "tokens_per_s_max", "prefill_ms",
                 "step_ms", "total_ms", "reps", "mem_weights_bytes", "mem_kv_bytes",
                 "mem_act_bytes", "mem_total_bytes", "mem_device_used_bytes", "wall_s",
                 "finished_at")
ROW_FIELDS = ("id",) + POINT_FIELDS + RESULT_FIELDS
FLOOR_FIELDS = ("bytes_per_step", "floor_step_ms", "floor_pct")

# Derived ratio columns: name -> (field, value of the peer row). tokens/s of the row over the
# tokens/s of the ok row of its group whose field has that value.
RATIOS: Dict[str, Tuple[str, str]] = {
    "vs_naive": ("variant", "naive"),
    "vs_hf_eager": ("variant", names.HF_EAGER),
    "vs_hf_compiled": ("variant", names.HF_COMPILED),
    "vs_all_on": ("ablate", names.ALL_ON),
}


def clean(v: Any) -> Any:
    """None for NaN / infinity (JSON has neither)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def empty_row(point: Mapping[str, Any]) -> Dict[str, Any]:
    """A row of ``point`` with every result field None and ablate defaulting to none."""
    row: Dict[str, Any] = {k: point.get(k) for k in ("id",) + POINT_FIELDS}
    row["ablate"] = row["ablate"] or names.ALL_ON
    row.update({k: None for k in RESULT_FIELDS})
    return row


def make_row(point: Mapping[str, Any], result=None, error: Optional[str] = None,
             gpu: Optional[str] = None, cc: Optional[int] = None, wall_s: float = 0.0,
             gpu_index: Any = None, host: Optional[str] = None,
             timed_by: str = names.TIMED_BY_ENGINE) -> Dict[str, Any]:
    """A row of one run of an executable. ``result`` is its parsed output (a RunResult), ``error``
    why it failed; ``gpu`` the device name when the run did not report one, ``gpu_index`` the GPU
    it was pinned to (CUDA_VISIBLE_DEVICES), ``host`` the machine."""
    row = empty_row(point)
    row.update(timed_by=timed_by, gpu=gpu, gpu_index=gpu_index, host=host or socket.gethostname(),
               cc=cc, status="failed" if error else "ok", error=error, wall_s=round(wall_s, 3),
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if result is not None:
        row["gpu"] = result.config.get("device", gpu)
        tps = tokens_per_s(result)
        row.update(tokens_per_s_median=tps["median"], tokens_per_s_min=tps["min"],
                   tokens_per_s_max=tps["max"], reps=len(result.timed_reps()) or None)
        for k in ("prefill_ms", "step_ms", "total_ms"):
            row[k] = result.timing.get(k)
        for k, v in result.memory.items():
            if f"mem_{k}" in row:
                row[f"mem_{k}"] = v
    return {k: clean(v) for k, v in row.items()}


def _norm(field: str, value: Any) -> Any:
    if field == "precision" and value is not None:
        try:
            return names.precision(value)
        except ValueError:
            return value
    return value


def group_key(row: Mapping[str, Any], fields: Sequence[str]) -> tuple:
    """The values of ``fields`` (precision in its canonical spelling)."""
    return tuple(_norm(f, row.get(f)) for f in fields)


def add_ratios(rows: List[Dict[str, Any]], ratios: Iterable[str],
               keys: Sequence[str] = ("gpu",) + GROUP_FIELDS) -> None:
    """Set the ratio columns (names of :data:`RATIOS`) on each row: its tokens/s over its peer's
    of the same ``keys`` (the ablation ratio also needs the same variant, and is only given to
    the variants that take the switches), None when either is not ok. A ratio never compares timings taken on different kinds of GPU (``gpu`` in keys)."""
    for col in ratios:
        field, value = RATIOS[col]
        match = tuple(keys) + (("variant",) if field == "ablate" else ())
        peers = {group_key(r, match): r.get("tokens_per_s_median") for r in rows
                 if _peer_value(r, field) == value and r.get("status") == "ok"}
        for r in rows:
            base, tps = peers.get(group_key(r, match)), r.get("tokens_per_s_median")
            ablatable = field != "ablate" or r.get("variant") in names.ABLATABLE
            r[col] = tps / base if r.get("status") == "ok" and tps and base and ablatable else None


def _peer_value(row: Mapping[str, Any], field: str) -> Any:
    v = row.get(field)
    return (v or names.ALL_ON) if field == "ablate" else v


def varying(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> List[str]:
    """The fields whose value differs between the rows."""
    rows = list(rows)
    return [f for f in fields if len({r.get(f) for r in rows}) > 1]


def frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]):
    """A DataFrame of the rows with exactly ``columns`` (missing ones None, NaN cleaned)."""
    import pandas as pd

    return pd.DataFrame([{c: clean(r.get(c)) for c in columns} for r in rows],
                        columns=list(columns))
