"""The views of the rows: which columns the files of a sweep and of a bench hold, and the
markdown tables printed at the end (sweep and compare, bench, the ablation table)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from .. import names
from .printers import Column, blank, markdown, num
from .rows import FLOOR_FIELDS, ROW_FIELDS, varying

# results.csv / results.json of a sweep: the rows, their ratios and (with a copy bandwidth) the
# floor. ``speedup_vs_naive`` is the sweep's name for vs_naive, kept for existing readers.
SWEEP_COLUMNS = ROW_FIELDS + ("speedup_vs_naive", "vs_all_on") + FLOOR_FIELDS
# results.csv / results.json of a bench.
BENCH_COLUMNS = ("variant", "batch", "gen", "prompt_len", "precision", "status", "error",
                 "tokens_per_s_median", "tokens_per_s_min", "tokens_per_s_max", "step_ms",
                 "total_ms", "reps", "gpu", "bytes_per_step", "floor_step_ms", "floor_pct",
                 "vs_naive", "vs_hf_eager", "vs_hf_compiled", "wall_s", "timed_by", "model", "id")


def status_cell(width: int):
    def fmt(v: Any, r: Mapping[str, Any]) -> str:
        return "ok" if v == "ok" else f"{v}: {str(r.get('error'))[:width]}"
    return fmt


def _ablated(records: Sequence[Mapping[str, Any]]) -> bool:
    return any((r.get("ablate") or names.ALL_ON) != names.ALL_ON for r in records)


def _has(records: Sequence[Mapping[str, Any]], key: str) -> bool:
    return any(not blank(r.get(key)) for r in records)


def sweep_table(df) -> str:
    """variant, B, gen, tokens/s median/min/max, speedup vs naive (and vs all-on for ablations,
    % of floor when known), status; plus the GPU, model, precision or prompt length where they
    vary."""
    records = df.to_dict("records")
    extra = varying([r for r in records if r.get("gpu")], ("gpu",))
    extra += varying(records, ("model", "precision", "prompt_len"))
    cols = [Column(f, f, align="left") for f in extra] + [Column("variant", "variant", align="left")]
    if _ablated(records):
        cols.append(Column("ablate", "ablate", align="left"))
    cols += [Column("batch", "B"), Column("gen", "gen"),
             Column("tokens_per_s_median", "tok/s median", "{:.1f}"),
             Column("tokens_per_s_min", "min", "{:.1f}"), Column("tokens_per_s_max", "max", "{:.1f}"),
             Column("speedup_vs_naive", "vs naive", "{:.2f}x")]
    if _ablated(records):
        cols.append(Column("vs_all_on", "vs all-on", "{:.2f}x"))
    if _has(records, "floor_pct"):
        cols.append(Column("floor_pct", "% of floor", "{:.1f} %"))
    cols.append(Column("status", "status", status_cell(120), align="left"))
    return markdown(records, cols)


def _tps_range(v: Any, r: Mapping[str, Any]) -> str:
    if blank(v):
        return ""
    return (f"{v:.1f} ({num(r.get('tokens_per_s_min'))}–{num(r.get('tokens_per_s_max'))})")


def bench_table(df) -> str:
    """variant, B, tok/s median (min–max), step ms, vs naive / HF eager / HF compiled, % of
    floor, status (and who timed the row, when a peer timed itself)."""
    records = df.to_dict("records")
    cols = [Column("variant", "variant", align="left"), Column("batch", "B"),
            Column("tokens_per_s_median", "tok/s median (min–max)", _tps_range),
            Column("step_ms", "step ms", "{:.4f}"), Column("vs_naive", "vs naive", "{:.2f}x")]
    peers = {r.get("variant") for r in records}
    if names.HF_EAGER in peers:
        cols.append(Column("vs_hf_eager", "vs HF eager", "{:.2f}x"))
    if names.HF_COMPILED in peers:
        cols.append(Column("vs_hf_compiled", "vs HF compiled", "{:.2f}x"))
    cols.append(Column("floor_pct", "% of floor", "{:.1f} %"))
    if any(r.get("timed_by") == names.TIMED_BY_GPT2OPTIM for r in records):
        cols.append(Column("timed_by", "timed by", align="left"))
    cols.append(Column("status", "status", status_cell(110), align="left"))
    return markdown(records, cols)


def curve_table(df) -> str:
    """The tokens/s curve: one line per batch size, one column of tokens/s (median) per variant
    (and ablation), then the % of floor of optimized when known."""
    records = [r for r in df.to_dict("records") if r.get("status") == "ok"]
    lines: Dict[str, None] = {}
    by_b: Dict[Any, Dict[str, Any]] = {}
    for r in records:
        name = r["variant"] + ("" if (r.get("ablate") or names.ALL_ON) == names.ALL_ON
                               else f" no-{r['ablate']}")
        lines[name] = None
        by_b.setdefault(r["batch"], {"batch": r["batch"]})[name] = r.get("tokens_per_s_median")
        if name == "optimized":
            by_b[r["batch"]]["floor"] = r.get("floor_pct")
    cols = [Column("batch", "B")] + [Column(n, n, "{:.1f}") for n in lines]
    table = [by_b[b] for b in sorted(by_b)]
    if _has(table, "floor"):
        cols.append(Column("floor", "optimized % of floor", "{:.1f} %"))
    return markdown(table, cols)


def ablation_table(df) -> str:
    """One configuration's ablations: each switch off as a ratio of tokens/s to all-on."""
    records = [r for r in df.to_dict("records") if r.get("variant") in names.ABLATABLE]
    extra = varying(records, ("gpu", "model", "precision", "batch", "gen", "prompt_len"))
    cols = [Column(f, {"batch": "B"}.get(f, f), align="left") for f in extra]
    cols += [Column("variant", "variant", align="left"), Column("ablate", "off", align="left"),
             Column("tokens_per_s_median", "tok/s median (min–max)", _tps_range),
             Column("step_ms", "step ms", "{:.4f}"), Column("vs_all_on", "vs all-on", "{:.3f}x"),
             Column("status", "status", status_cell(110), align="left")]
    return markdown(records, cols)


def point_label(point: Mapping[str, Any], extra_fields: Sequence[str]) -> str:
    """``optimized BF16 B=4 gen=16``: the variant, the fields that vary, batch and gen."""
    shown = {"precision": "", "model": "", "prompt_len": "prompt=", "sampling": "", "ablate": "no-"}
    parts = [point["variant"]] + [f"{shown.get(f, f + '=')}{point.get(f)}" for f in extra_fields
                                  if not (f == "ablate" and (point.get(f) or names.ALL_ON)
                                          == names.ALL_ON)]
    return " ".join(parts + [f"B={point['batch']}", f"gen={point['gen']}"])


def progress_line(label: str, row: Dict[str, Any], where: str = "") -> str:
    """``<label> ... 1234 tok/s`` or ``<label> ... FAILED: <error>``."""
    if row["status"] == "ok":
        return f"{label} ...{where} {num(row['tokens_per_s_median'], '{:.0f}') or '?'} tok/s"
    return f"{label} ...{where} FAILED: {row['error']}"


def header_fields(points: List[Mapping[str, Any]]) -> List[str]:
    """The point fields a progress label shows: those that vary."""
    return varying(points, ("model", "precision", "prompt_len", "sampling", "ablate"))
