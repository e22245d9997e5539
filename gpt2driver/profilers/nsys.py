"""Nsight Systems: ``nsys profile`` from the first MEASURE (or PREFILL) range, then ``nsys stats``
into CSV; per-kernel and per-NVTX-range tables of the captured step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

from ..engine.runner import tail
from ..errors import ProfilingError, RunError
from .common import (MEASURE_RANGE, NSYS_EMPTY_MARKERS, PERMISSION_MARKERS, PHASES, ProfileReport,
                     check_run, empty_capture_message, nsys_capture, permission_message, run_kept)
from .tables import BASE_COLUMNS, csv_block, find_col, finish, to_number, short_kernel_name
from .tables import TIME_TO_US, UNIT_RE

NSYS_REPORTS = ("cuda_gpu_kern_sum", "nvtx_sum")
NSYS_REPORTS_LEGACY = ("gpukernsum", "nvtxsum")  # the same reports in older nsys versions


def nsys_command(binary: Path, args: Sequence[str], out: Path,
                 range_end: str = "stop-shutdown", range_name: str = MEASURE_RANGE) -> List[str]:
    """nsys profile from the first MEASURE range, or ``range_name`` (``out`` is the report path
    without .nsys-rep).

    ``range_end`` stop-shutdown ends collection and the program with that range (one step);
    ``none`` would keep collecting to the end of the program (every measured step).
    """
    return ["nsys", "profile", "-t", "cuda,nvtx", "--capture-range=nvtx",
            f"--nvtx-capture={nsys_capture(range_name)}", f"--capture-range-end={range_end}", "-o", str(out),
            "--force-overwrite", "true", str(binary), *map(str, args)]


def nsys_stats_command(report: Path, prefix: Path, legacy: bool = False) -> List[str]:
    """nsys stats writing one CSV per report: <prefix>_<report name>.csv."""
    names = NSYS_REPORTS_LEGACY if legacy else NSYS_REPORTS
    return ["nsys", "stats", "--report", ",".join(names), "--format", "csv", "--output", str(prefix),
            str(report)]


def _nsys_summary(text: str, name_keys: Sequence[str]):
    """An nsys stats summary CSV (any version's column spelling) as a DataFrame in microseconds."""
    import pandas as pd

    header, rows = csv_block(text, ["Total Time", "Instances"])
    raw = pd.DataFrame(rows, columns=header)
    total = find_col(header, "totaltime")
    calls = find_col(header, "instances", "numcalls", "calls", "count")
    name = find_col(header, *name_keys)
    if total is None or calls is None or name is None:
        raise ProfilingError(f"unexpected nsys stats columns: {', '.join(header)}")
    m = UNIT_RE.search(total)
    scale = TIME_TO_US[m.group(1)] if m else 1e-3  # nanoseconds unless the header says otherwise
    out = pd.DataFrame({"name": raw[name].astype(str).str.strip(),
                        "calls": raw[calls].map(to_number),
                        "total_us": raw[total].map(to_number) * scale})
    for col, keys in (("mean_us", ("avg", "average", "mean")), ("med_us", ("med",)),
                      ("min_us", ("min",)), ("max_us", ("max",)), ("std_us", ("stddev", "std"))):
        src = find_col(header, *keys)
        out[col] = raw[src].map(to_number) * scale if src else math.nan
    style = find_col(header, "style")
    if style:
        out["style"] = raw[style].astype(str)
    missing = out["mean_us"].isna()
    out.loc[missing, "mean_us"] = out["total_us"] / out["calls"]
    return out


def parse_nsys_kern_sum(text: str, steps: int = 1):
    """``nsys stats --report cuda_gpu_kern_sum`` (or ``gpukernsum``) CSV -> per-kernel table."""
    df = _nsys_summary(text, ("name",))
    df.insert(0, "kernel", df["name"])
    df["name"] = df["kernel"].map(short_kernel_name)
    return finish(df, steps, BASE_COLUMNS + ["med_us", "min_us", "max_us", "std_us", "kernel"])


def parse_nsys_nvtx_sum(text: str):
    """``nsys stats --report nvtx_sum`` (or ``nvtxsum``) CSV -> per-range table
    (``name calls total_us mean_us med_us min_us max_us std_us style``).

    Range names may come domain-qualified ('decode:MEASURE'); ``name`` drops the domain.
    """
    df = _nsys_summary(text, ("range", "name"))
    df["name"] = df["name"].str.rsplit(":", n=1).str[-1]
    df["calls"] = df["calls"].fillna(0).astype("int64")
    return df.reset_index(drop=True)


def measured_steps(ranges, default: int = 1, range_name: str = MEASURE_RANGE) -> int:
    """How many MEASURE (or ``range_name``) ranges a nvtx_sum table holds (``default`` without one)."""
    if ranges is None or len(ranges) == 0:
        return default
    hit = ranges[ranges["name"] == range_name]
    return int(hit["calls"].sum()) if len(hit) and hit["calls"].sum() > 0 else default


def find_stats_csv(prefix: Path, names: Sequence[str]) -> Optional[Path]:
    """The CSV nsys stats wrote for one of the report ``names`` next to ``prefix``.

    Versions write <prefix>_<report>.csv, with report arguments as further suffixes
    (<prefix>_<report>_<arg>.csv); a version that ignores the prefix names the file after the
    report file (profile_<report>.csv), which is looked for last. The longest report name is
    tried first, so that a short one never matches a longer report's file.
    """
    files = sorted(prefix.parent.glob("*.csv"))
    ordered = sorted(names, key=len, reverse=True)
    for name in ordered:
        for f in files:
            if f.stem.startswith(prefix.name):
                rest = f.stem[len(prefix.name):].lstrip("_")
                if rest == name or rest.startswith(name + "_"):
                    return f
    for name in ordered:
        for f in files:
            if f.stem.endswith("_" + name):
                return f
    return None


def run_nsys(binary: Path, args: Sequence[str], out_dir: Path, timeout: float,
             exe: Optional[str] = None, name: str = "profile", phase: str = "decode") -> ProfileReport:
    """nsys profile + nsys stats; per-kernel and per-NVTX-range tables of the captured step(s)
    (``phase='prefill'``: of the prefill).

    nsys ends the program after the first MEASURE (PREFILL) range (stop-shutdown), so the program
    prints no done line and nsys' own exit code is not trusted: the report file is what counts.
    """
    rng = PHASES[phase]
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / name
    prof = run_kept(nsys_command(binary, args, base, range_name=rng), out_dir, "nsys_profile", timeout,
                     exe)
    report = next((p for p in (base.with_suffix(".nsys-rep"), base.with_suffix(".qdrep"))
                   if p.exists()), None)
    res = check_run("nsys", prof, check_returncode=report is None, range_name=rng)
    if report is None:
        raise ProfilingError(f"nsys wrote no report ({base}.nsys-rep): "
                             + empty_capture_message("nsys", rng))
    prefix = out_dir / "stats"
    commands = [prof.cmd]
    first = None
    kern = None
    for legacy in (False, True):
        stats = run_kept(nsys_stats_command(report, prefix, legacy), out_dir,
                          "nsys_stats" + ("_legacy" if legacy else ""), timeout, exe)
        commands.append(stats.cmd)
        first = first or stats
        text = stats.stdout + "\n" + stats.stderr
        if any(m in text for m in PERMISSION_MARKERS):
            raise ProfilingError(permission_message("nsys"))
        kern = find_stats_csv(prefix, ("cuda_gpu_kern_sum", "gpukernsum"))
        if kern is not None or stats.returncode == 0 or any(m in text for m in NSYS_EMPTY_MARKERS):
            break  # the legacy report names only when the current ones were refused
    if kern is None or not kern.read_text().strip():
        if first.returncode == 0 or any(m in first.stdout + first.stderr for m in NSYS_EMPTY_MARKERS):
            raise ProfilingError(empty_capture_message("nsys", rng))
        why = tail(first.stderr or first.stdout, 5).replace("\n", " | ")
        raise RunError(f"nsys stats exited with code {first.returncode}" + (f": {why}" if why else ""),
                       returncode=first.returncode, stderr_tail=tail(first.stderr))
    nvtx = find_stats_csv(prefix, ("nvtx_sum", "nvtxsum"))
    ranges = None
    if nvtx is not None and nvtx.read_text().strip():
        try:
            ranges = parse_nsys_nvtx_sum(nvtx.read_text())
        except ProfilingError:
            ranges = None
    steps = measured_steps(ranges, range_name=rng)
    try:
        table = parse_nsys_kern_sum(kern.read_text(), steps)
    except ProfilingError:
        raise ProfilingError(empty_capture_message("nsys", rng)) from None
    if table.empty:
        raise ProfilingError(empty_capture_message("nsys", rng))
    notes = []
    if ranges is not None and len(ranges):
        ranges["step_us"] = ranges["total_us"] / steps
        shown = ", ".join(f"{r.name} {r.mean_us:.1f} us" for r in ranges.head(8).itertuples())
        notes.append(f"NVTX ranges, host time per call (the program does not wait for the GPU "
                     f"inside them): {shown}")
    if steps == 1 and phase == "decode":
        notes.append(f"nsys captures one step: it stops at the end of the first {MEASURE_RANGE} range")
    return ProfileReport("nsys", table, steps, out_dir, res, ranges, None, commands, notes, phase)
