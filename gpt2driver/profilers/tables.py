"""The one table every profiler gives, one row per kernel (nsys, ncu) or stage (builtin):
``name calls calls_per_step total_us mean_us step_us share`` (``share`` is the row's fraction of the
summed kernel / stage time of a step), plus per tool: nsys ``med_us min_us max_us std_us``; ncu
``dram_bytes`` (mean per call) ``gbps`` (achieved DRAM GB/s = bytes / duration) ``dram_pct``
``occupancy_pct`` ``sm_pct`` ``stages`` and any other metric asked for. :func:`with_ceiling` adds
``copy_pct`` (gbps as a percentage of a copy bandwidth). Parsing helpers for the tools' CSV and the
printed summary live here too.
"""

from __future__ import annotations

import csv
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import ProfilingError
from ..tables.printers import Column, markdown
from .common import DEFAULT_COPY_GBPS, ProfileReport

BASE_COLUMNS = ["name", "calls", "calls_per_step", "total_us", "mean_us", "step_us", "share"]


def to_number(value) -> float:
    """'5,344' / '1.5' / 12 -> float; '', 'n/a' and other text -> NaN."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return math.nan


def short_kernel_name(name: str) -> str:
    """'void ns::k<1, float>(float *, int)' -> 'k<1, float>' (no return type, scope, arguments)."""
    text = str(name).strip()
    depth, cut = 0, len(text)
    for i in range(len(text) - 1, -1, -1):  # the argument list: the last top-level '(...)'
        c = text[i]
        if c == ")":
            depth += 1
        elif c == "(":
            depth -= 1
            if depth == 0:
                cut = i
                break
    head = text[:cut].strip() if cut > 0 else text
    depth, start = 0, 0
    for i, c in enumerate(head):  # scope and return type end at the last top-level '::' or ' '
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(depth - 1, 0)
        elif depth == 0 and (c == " " or head.startswith("::", i)):
            start = i + (2 if c == ":" else 1)
    return head[start:] or text


UNIT_RE = re.compile(r"\(\s*(ns|us|ms|s)\s*\)\s*$")
TIME_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def _norm(col: str) -> str:
    return re.sub(r"[^a-z%]", "", col.lower())


def find_col(columns: Sequence[str], *keys: str) -> Optional[str]:
    """The first column whose normalised name (unit stripped) starts with one of ``keys``."""
    for key in keys:
        for col in columns:
            if _norm(UNIT_RE.sub("", col)).startswith(key):
                return col
    return None


def csv_block(text: str, must_have: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the first CSV table whose header line names all of ``must_have``.

    Skips whatever a tool prints before it (progress lines, titles) and stops at the first
    blank line or a line that is not a row of the same width.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if all(m in line for m in must_have) and "," in line:
            header = next(csv.reader([line]))
            rows = []
            for row in csv.reader(lines[i + 1:]):
                if not row or not "".join(row).strip():
                    break
                if len(row) != len(header):
                    break
                rows.append(row)
            return [h.strip() for h in header], rows
    raise ProfilingError(f"no CSV table with the columns {', '.join(must_have)} found")


def finish(df, steps: int, order: Sequence[str]):
    """Per-step columns and shares; rows sorted by total time; ``order`` columns first."""
    steps = max(int(steps or 1), 1)
    df["calls"] = df["calls"].fillna(0).astype("int64")
    df["calls_per_step"] = df["calls"] / steps
    df["step_us"] = df["total_us"] / steps
    total = df["total_us"].sum()
    df["share"] = df["total_us"] / total if total > 0 else math.nan
    df = df.sort_values("total_us", ascending=False, kind="stable").reset_index(drop=True)
    cols = [c for c in order if c in df.columns] + [c for c in df.columns if c not in order]
    return df[cols]


def with_ceiling(df, copy_gbps: float = DEFAULT_COPY_GBPS):
    """Add ``copy_pct``: achieved GB/s as a percentage of the copy bandwidth (where gbps is known)."""
    if "gbps" in df.columns and copy_gbps and copy_gbps > 0:
        df = df.copy()
        df["copy_pct"] = df["gbps"] / copy_gbps * 100.0
    return df


def _fmt(value, spec: str) -> str:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _clip(text: str, width: int = 56) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(df, top: int = 10, unit: str = "step") -> str:
    """The first ``top`` rows (0 = all) as a github-style table with the columns the tool filled
    (``unit``: what a 'step' is in the headers, 'prefill' for the prefill)."""
    def number(spec: str):
        return lambda v, r: _fmt(v, spec)

    def text(width: int):
        return lambda v, r: _clip(v, width)

    def share(v, r) -> str:
        return _fmt(v * 100.0, ".1f") + "%" if v == v else ""

    rows = df if not top else df.head(top)
    cols = [Column("name", "name", text(56), "left"),
            Column("calls_per_step", f"calls/{unit}", number(".3g")),
            Column("step_us", f"us/{unit}", number(".2f")), Column("mean_us", "mean us", number(".2f")),
            Column("share", "share", share)]
    extra = [("gbps", "GB/s", ".0f"), ("copy_pct", "% of copy", ".1f"), ("dram_pct", "DRAM %", ".1f"),
             ("occupancy_pct", "occupancy %", ".1f"), ("sm_pct", "SM %", ".1f"),
             ("med_us", "median us", ".2f"), ("stages", "stages", None), ("kernels", "kernels", None)]
    cols += [Column(key, header, number(spec) if spec else text(40), "right" if spec else "left")
             for key, header, spec in extra
             if key in df.columns and df[key].notna().any() and (df[key].astype(str) != "").any()]
    return markdown(rows.to_dict("records"), cols, empty="")


def of_copy(gbps: float, copy_gbps: Optional[float]) -> str:
    """`` = 41.0% of the copy bandwidth (3000 GB/s)``; nothing when the copy bandwidth is unknown."""
    if not copy_gbps:
        return ""
    return f" = {gbps / copy_gbps * 100:.1f}% of the copy bandwidth ({copy_gbps:.0f} GB/s)"


def summarize(report: ProfileReport, copy_gbps: float = DEFAULT_COPY_GBPS, top: int = 10) -> str:
    """Top rows, their share of the step, and achieved bandwidth against the copy bandwidth."""
    df = with_ceiling(report.table, copy_gbps)
    kernel_us = float(df["step_us"].sum())
    what = "stages" if report.tool == "builtin" else "kernels"
    unit = report.unit
    lines = []
    if report.phase == "prefill":
        head = f"{report.tool}: the prefill, {what} {kernel_us:.1f} us"
    else:
        head = f"{report.tool}: {report.steps} measured step{'s' if report.steps != 1 else ''}, " \
               f"{what} {kernel_us:.1f} us/step"
    if report.step_us:
        head += f", step {report.step_us:.1f} us"
    lines.append(head)
    lines.append(format_table(df, top, unit))
    n = len(df) if not top else min(top, len(df))
    if n < len(df):
        lines.append(f"top {n} of {len(df)} {what}: {df['share'].head(n).sum() * 100:.1f}% of the "
                     f"{what[:-1]} time of {'a step' if unit == 'step' else 'the prefill'}")
    has_bytes = "gbps" in df.columns and "dram_bytes" in df.columns and df["gbps"].notna().any()
    if has_bytes:
        total_bytes = float((df["dram_bytes"] * df["calls"]).sum())
        total_ns = float(df["total_us"].sum()) * 1e3
        if total_ns > 0:
            gbps = total_bytes / total_ns
            lines.append(f"DRAM traffic {total_bytes / max(report.steps, 1) / 1e6:.1f} MB/{unit} at "
                         f"{gbps:.0f} GB/s over the kernel time{of_copy(gbps, copy_gbps)}")
    weights = report.result.memory.get("weights_bytes")
    wall_us = report.step_us or (kernel_us if report.tool != "builtin" else None)
    if isinstance(weights, (int, float)) and weights > 0 and wall_us and not has_bytes and unit == "step":
        gbps = weights / (wall_us * 1e3)
        basis = "step time" if report.step_us else "kernel time"
        lines.append(f"weights ({weights / 1e6:.0f} MB, read once a step) / {basis}: at least "
                     f"{gbps:.0f} GB/s{of_copy(gbps, copy_gbps)}")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def combined_frame(reports: Iterable[Tuple[Dict[str, object], ProfileReport]],
                   copy_gbps: float = DEFAULT_COPY_GBPS):
    """All reports' tables in one DataFrame, each row tagged with its (tool, variant, batch...)."""
    import pandas as pd

    frames = []
    for tags, rep in reports:
        df = with_ceiling(rep.table, copy_gbps).copy()
        for i, (k, v) in enumerate(tags.items()):
            df.insert(i, k, v)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
