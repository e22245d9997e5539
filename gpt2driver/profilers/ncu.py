"""Nsight Compute: ncu over the kernels inside the MEASURE (or PREFILL) ranges, CSV with base units;
one row per kernel launch, then per kernel or per NVTX stage, with DRAM bytes and throughput,
occupancy and SM throughput."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ProfilingError
from .common import (MEASURE_RANGE, NCU_EMPTY_MARKERS, NVTX_DOMAIN, PHASES, ProfileReport,
                     check_run, empty_capture_message, ncu_nvtx_include, run_kept)
from .tables import BASE_COLUMNS, finish, short_kernel_name, to_number

NCU_DEFAULT_METRICS = (
    "gpu__time_duration.sum",
    "dram__bytes.sum",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
)
NCU_DURATION = "gpu__time_duration.sum"

# Table columns -> the ncu metric names (raw, or as a --section prints them) that fill them.
NCU_ALIASES: Dict[str, Tuple[str, ...]] = {
    "duration_ns": ("gpu__time_duration.sum", "Duration"),
    "dram_bytes": ("dram__bytes.sum",),
    "dram_read_bytes": ("dram__bytes_read.sum",),
    "dram_write_bytes": ("dram__bytes_write.sum",),
    "dram_pct": ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "DRAM Throughput"),
    "occupancy_pct": ("sm__warps_active.avg.pct_of_peak_sustained_active", "Achieved Occupancy"),
    "sm_pct": ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "Compute (SM) Throughput"),
}
_ALIAS_OF = {name: col for col, names in NCU_ALIASES.items() for name in names}


def ncu_command(binary: Path, args: Sequence[str], log_file: Path, metrics: Sequence[str] = (),
                sections: Sequence[str] = (), clock_control: Optional[str] = "none",
                kernel_regex: Optional[str] = None, launch_count: Optional[int] = None,
                range_name: str = MEASURE_RANGE) -> List[str]:
    """ncu over the kernels inside MEASURE ranges (or ``range_name``), CSV with base units into
    ``log_file``.

    Without metrics or sections the default metric set is collected; the duration metric is always
    added because every table column is normalised by it.
    """
    cmd = ["ncu", "--nvtx", "--nvtx-include", ncu_nvtx_include(range_name)]
    if clock_control:
        cmd += ["--clock-control", clock_control]
    if kernel_regex:
        cmd += ["--kernel-name", f"regex:{kernel_regex}"]
    if launch_count is not None:
        cmd += ["--launch-count", str(int(launch_count))]
    for section in sections:
        cmd += ["--section", section]
    wanted = list(metrics) if (metrics or sections) else list(NCU_DEFAULT_METRICS)
    if NCU_DURATION not in wanted:
        wanted.insert(0, NCU_DURATION)
    cmd += ["--metrics", ",".join(dict.fromkeys(wanted))]
    return cmd + ["--csv", "--print-units", "base", "--log-file", str(log_file), str(binary),
                  *map(str, args)]

_NVTX_ENTRY = re.compile(r'"([^"]*)"')

_LAYER = re.compile(r"^layer\d+$")


def nvtx_stage(cell: str, range_name: str = MEASURE_RANGE) -> Tuple[str, str]:
    """(stage, layer) of an ncu NVTX cell: '1967 "decode:MEASURE:...:MEASURE" "decode:layer0:..."'.

    Each quoted entry is Domain:Push/Pop_Range:...; the stage is the innermost range of the decode
    domain that is neither MEASURE (``range_name``: the profiled range) nor layer<i> ('(step)' for
    kernels directly in the profiled range).
    """
    stage, layer = "", ""
    for entry in _NVTX_ENTRY.findall(cell or ""):
        parts = entry.split(":")
        if len(parts) < 2 or parts[0] != NVTX_DOMAIN:
            continue
        rng = parts[1]
        if rng == range_name:
            stage = stage or "(step)"
        elif _LAYER.match(rng):
            layer = rng
        else:
            stage = rng
    return stage, layer

_NCU_SCALE = {  # to ns / bytes / bytes per second; '%' and counts unchanged
    "ns": 1.0, "nsecond": 1.0, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6,
    "s": 1e9, "second": 1e9, "byte": 1.0, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
    "byte/second": 1.0, "kbyte/second": 1e3, "mbyte/second": 1e6, "gbyte/second": 1e9,
    "tbyte/second": 1e12,
}


def parse_ncu_csv(text: str, range_name: str = MEASURE_RANGE):
    """An ``ncu --csv`` output (log file or stdout) -> one row per profiled kernel launch.

    Columns: id kernel name stage layer block grid, then one column per metric: the known ones
    under their table names (``duration_ns dram_bytes dram_pct occupancy_pct sm_pct``), the others
    under their metric names. Values lose thousands separators; time and byte units are scaled
    to ns and bytes. Lines before the header (==PROF== lines, the program's own output) are skipped.
    """
    import pandas as pd

    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines)
                  if l.lstrip().startswith('"ID",') and '"Metric Name"' in l), None)
    if start is None:
        if any(m in text for m in NCU_EMPTY_MARKERS):
            raise ProfilingError(empty_capture_message("ncu", range_name))
        raise ProfilingError("no ncu CSV found (expected a header line starting with \"ID\",)")
    reader = csv.reader(l for l in lines[start:] if not l.startswith(("==", "##GPT2D")))
    header = [h.strip() for h in next(reader)]
    col = {h: i for i, h in enumerate(header)}
    for need in ("ID", "Kernel Name", "Metric Name", "Metric Value"):
        if need not in col:
            raise ProfilingError(f"ncu CSV without a {need!r} column: {', '.join(header)}")
    nvtx_col = next((i for i, h in enumerate(header) if "Push/Pop_Range" in h), None)
    unit_col = col.get("Metric Unit")
    launches: Dict[str, Dict[str, object]] = {}
    for row in reader:
        if len(row) != len(header):
            continue
        lid = row[col["ID"]].strip()
        rec = launches.get(lid)
        if rec is None:
            stage, layer = nvtx_stage(row[nvtx_col], range_name) if nvtx_col is not None else ("", "")
            kernel = row[col["Kernel Name"]].strip()
            rec = launches[lid] = {"id": int(to_number(lid)) if lid.isdigit() else lid,
                                   "kernel": kernel, "name": short_kernel_name(kernel),
                                   "stage": stage, "layer": layer,
                                   "block": row[col["Block Size"]] if "Block Size" in col else "",
                                   "grid": row[col["Grid Size"]] if "Grid Size" in col else ""}
        metric = row[col["Metric Name"]].strip()
        value = to_number(row[col["Metric Value"]])
        unit = row[unit_col].strip().lower() if unit_col is not None else ""
        value *= _NCU_SCALE.get(unit, 1.0)
        key = _ALIAS_OF.get(metric, metric)
        if key not in rec or (isinstance(rec[key], float) and math.isnan(rec[key])):
            rec[key] = value
    if not launches:
        raise ProfilingError(empty_capture_message("ncu", range_name))
    df = pd.DataFrame.from_records(list(launches.values()))
    if "dram_bytes" not in df and {"dram_read_bytes", "dram_write_bytes"} <= set(df.columns):
        df["dram_bytes"] = df["dram_read_bytes"] + df["dram_write_bytes"]
    if "duration_ns" not in df:
        raise ProfilingError("the ncu CSV has no kernel duration (gpu__time_duration.sum)")
    return df


def ncu_table(launches, steps: int = 1, by: str = "kernel"):
    """Per-kernel (``by='kernel'``) or per-stage (``by='stage'``) table of parse_ncu_csv's launches.

    Percentages (DRAM, occupancy, SM) are duration-weighted means over the launches; ``gbps`` is
    total DRAM bytes / total duration; ``dram_bytes`` the mean per call.
    """
    import pandas as pd

    if by not in ("kernel", "stage"):
        raise ValueError(f"by must be kernel or stage, not {by!r}")
    key = "kernel" if by == "kernel" else "stage"
    fixed = {"id", "kernel", "name", "stage", "layer", "block", "grid", "duration_ns"}
    metrics = [c for c in launches.columns if c not in fixed
               and pd.api.types.is_numeric_dtype(launches[c])]
    rows = []
    for value, grp in launches.groupby(key, sort=False):
        dur = grp["duration_ns"].fillna(0.0)
        total_ns = float(dur.sum())
        row = {"name": (grp["name"].iloc[0] if by == "kernel" else (value or "(none)")),
               "calls": len(grp), "total_us": total_ns / 1e3,
               "mean_us": total_ns / 1e3 / len(grp)}
        for m in metrics:
            vals = grp[m]
            ok = vals.notna()
            if not ok.any():
                row[m] = math.nan
            elif "pct" in m and dur[ok].sum() > 0:
                row[m] = float((vals[ok] * dur[ok]).sum() / dur[ok].sum())
            elif m.endswith("_bytes"):
                row[m] = float(vals[ok].sum()) / len(grp)
            else:
                row[m] = float(vals[ok].mean())
        if "dram_bytes" in grp:
            b = grp["dram_bytes"]
            row["gbps"] = float(b.sum()) / total_ns if total_ns > 0 and b.notna().any() else math.nan
        other = "stage" if by == "kernel" else "name"
        row["stages" if by == "kernel" else "kernels"] = ", ".join(
            dict.fromkeys(s for s in grp[other].astype(str) if s))
        if by == "kernel":
            row["kernel"] = value
        rows.append(row)
    df = pd.DataFrame.from_records(rows)
    order = BASE_COLUMNS + ["dram_bytes", "gbps", "dram_pct", "occupancy_pct", "sm_pct"]
    return finish(df, steps, order)


@dataclass
class NcuOptions:
    metrics: Sequence[str] = ()
    sections: Sequence[str] = ()
    clock_control: Optional[str] = "none"
    kernel_regex: Optional[str] = None
    launch_count: Optional[int] = None
    by: str = "kernel"


def run_ncu(binary: Path, args: Sequence[str], out_dir: Path, timeout: float,
            options: Optional[NcuOptions] = None, exe: Optional[str] = None,
            steps: int = 1, phase: str = "decode") -> ProfileReport:
    """ncu with CSV output into ncu.csv; per-kernel (or per-stage) metrics table of the measured
    decode steps (``phase='prefill'``: of the prefill, one 'step')."""
    o = options or NcuOptions()
    rng = PHASES[phase]
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "ncu.csv"
    cmd = ncu_command(binary, args, log, o.metrics, o.sections, o.clock_control, o.kernel_regex,
                      o.launch_count, range_name=rng)
    run = run_kept(cmd, out_dir, "ncu", timeout, exe)
    log_text = log.read_text(errors="replace") if log.exists() else ""
    res = check_run("ncu", run, log_text, range_name=rng)
    text = log_text if '"ID"' in log_text else (run.stdout + "\n" + log_text)
    launches = parse_ncu_csv(text, rng)
    launches.to_csv(out_dir / "ncu_launches.csv", index=False)
    steps = 1 if phase == "prefill" else int(res.profile.get("steps") or steps or 1)
    table = ncu_table(launches, steps, o.by)
    notes = []
    if o.launch_count is not None or o.kernel_regex:
        notes.append("kernels filtered (--launch-count / --kernel-regex): per-step numbers cover "
                     "only the profiled kernels")
    notes.append("ncu runs each kernel alone, caches flushed first (its default --cache-control all): "
                 "durations leave out launch gaps")
    return ProfileReport("ncu", table, steps, out_dir, res, None, None, [cmd], notes, phase)
