"""Profiling the ``profile`` executable: nsys, ncu or its built-in stage timer, into one table.

Three layers, each small:

- command lines (pure): :func:`profile_args`, :func:`nsys_command`, :func:`nsys_stats_command`,
  :func:`ncu_command`;
- parsers (pure, text in, DataFrame out): :func:`parse_nsys_kern_sum`, :func:`parse_nsys_nvtx_sum`,
  :func:`parse_ncu_csv` / :func:`ncu_table`, :func:`builtin_table`;
- glue that runs the tools (argument lists, timeouts, never a shell) and keeps every file in a
  results folder: :func:`run_nsys`, :func:`run_ncu`, :func:`run_builtin`, :func:`save_report`.

Every tool gives the same table shape, one row per kernel (nsys, ncu) or stage (builtin):
``name calls calls_per_step total_us mean_us step_us share`` (``share`` is the row's fraction of the
summed kernel / stage time of a step), plus per tool: nsys ``med_us min_us max_us std_us``; ncu
``dram_bytes`` (mean per call) ``gbps`` (achieved DRAM GB/s = bytes / duration) ``dram_pct``
``occupancy_pct`` ``sm_pct`` ``stages`` and any other metric asked for. :func:`with_ceiling` adds
``copy_pct`` (gbps as a percentage of a copy bandwidth).

NVTX (docs/protocol.md): everything lives in the domain ``decode``; each measured decode step is a
push/pop range ``MEASURE``, the prompt's prefill the range ``PREFILL`` (``phase='prefill'``: the tools
then capture that range instead). nsys writes a range as range@domain, ncu as domain@range with a
trailing ``/`` for push/pop ranges.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .protocol import EXIT_CODES, ProtocolError, RunResult, parse_output
from .runner import RunError, _tail, communicate_group, engine_args, run_binary, spawn_group

TOOLS = ("builtin", "nsys", "ncu")
NVTX_DOMAIN = "decode"
MEASURE_RANGE = "MEASURE"
PREFILL_RANGE = "PREFILL"
PHASES = {"decode": MEASURE_RANGE, "prefill": PREFILL_RANGE}  # what is profiled -> its NVTX range


def nsys_capture(range_name: str = MEASURE_RANGE) -> str:
    """nsys --nvtx-capture value of a range of our domain: range@domain."""
    return f"{range_name}@{NVTX_DOMAIN}"


def ncu_nvtx_include(range_name: str = MEASURE_RANGE) -> str:
    """ncu --nvtx-include value of a push/pop range of our domain: domain@range/."""
    return f"{NVTX_DOMAIN}@{range_name}/"

# H100 80GB HBM3 device-to-device copy, read + write counted (docs/perf-notes.md).
DEFAULT_COPY_GBPS = 3000.0

NSYS_REPORTS = ("cuda_gpu_kern_sum", "nvtx_sum")
NSYS_REPORTS_LEGACY = ("gpukernsum", "nvtxsum")  # the same reports in older nsys versions

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

BASE_COLUMNS = ["name", "calls", "calls_per_step", "total_us", "mean_us", "step_us", "share"]

PERMISSION_MARKERS = ("ERR_NVGPUCTRPERM",
                      "does not have permission to access NVIDIA GPU Performance Counters")
NCU_EMPTY_MARKERS = ("No kernels were profiled",)
NSYS_EMPTY_MARKERS = ("No NVTX range matched", "does not contain CUDA kernel data")

INSTALL_HINT = {
    "nsys": "install Nsight Systems (it comes with the CUDA toolkit, or from "
            "developer.nvidia.com/nsight-systems) and put nsys on PATH",
    "ncu": "install Nsight Compute (it comes with the CUDA toolkit, or from "
           "developer.nvidia.com/nsight-compute) and put ncu on PATH",
}


class ProfilingError(RuntimeError):
    """A profiler is missing, refused, captured nothing, or wrote something unreadable."""


# ------------------------------------------------------------------------------------------------
# Command lines (pure)
# ------------------------------------------------------------------------------------------------


def require_tool(tool: str) -> str:
    """The path of nsys/ncu, or ProfilingError saying it is not installed and what to do."""
    path = shutil.which(tool)
    if path is None:
        raise ProfilingError(f"{tool} is not installed (not found on PATH): "
                             f"{INSTALL_HINT.get(tool, 'install it')}, or use --tool builtin")
    return path


def profile_args(checkpoint: Path, variant: str = "optimized", batch: int = 1, steps: int = 16,
                 warmup: int = 8, prompt_len: Optional[int] = None, builtin: bool = False) -> List[str]:
    """The profile executable's arguments (quiet: result lines only)."""
    args = engine_args(checkpoint, batch=batch, prompt_len=prompt_len, warmup=warmup, quiet=True)
    args += ["--variant", variant, "--steps", str(steps)]
    return args + ["--builtin"] if builtin else args


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


def split_list(text: Optional[str]) -> List[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (for --metrics / --sections)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


# ------------------------------------------------------------------------------------------------
# Parsers (pure)
# ------------------------------------------------------------------------------------------------


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


_UNIT_RE = re.compile(r"\(\s*(ns|us|ms|s)\s*\)\s*$")
_TIME_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def _norm(col: str) -> str:
    return re.sub(r"[^a-z%]", "", col.lower())


def _find_col(columns: Sequence[str], *keys: str) -> Optional[str]:
    """The first column whose normalised name (unit stripped) starts with one of ``keys``."""
    for key in keys:
        for col in columns:
            if _norm(_UNIT_RE.sub("", col)).startswith(key):
                return col
    return None


def _csv_block(text: str, must_have: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
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


def _nsys_summary(text: str, name_keys: Sequence[str]):
    """An nsys stats summary CSV (any version's column spelling) as a DataFrame in microseconds."""
    import pandas as pd

    header, rows = _csv_block(text, ["Total Time", "Instances"])
    raw = pd.DataFrame(rows, columns=header)
    total = _find_col(header, "totaltime")
    calls = _find_col(header, "instances", "numcalls", "calls", "count")
    name = _find_col(header, *name_keys)
    if total is None or calls is None or name is None:
        raise ProfilingError(f"unexpected nsys stats columns: {', '.join(header)}")
    m = _UNIT_RE.search(total)
    scale = _TIME_TO_US[m.group(1)] if m else 1e-3  # nanoseconds unless the header says otherwise
    out = pd.DataFrame({"name": raw[name].astype(str).str.strip(),
                        "calls": raw[calls].map(to_number),
                        "total_us": raw[total].map(to_number) * scale})
    for col, keys in (("mean_us", ("avg", "average", "mean")), ("med_us", ("med",)),
                      ("min_us", ("min",)), ("max_us", ("max",)), ("std_us", ("stddev", "std"))):
        src = _find_col(header, *keys)
        out[col] = raw[src].map(to_number) * scale if src else math.nan
    style = _find_col(header, "style")
    if style:
        out["style"] = raw[style].astype(str)
    missing = out["mean_us"].isna()
    out.loc[missing, "mean_us"] = out["total_us"] / out["calls"]
    return out


def _finish(df, steps: int, order: Sequence[str]):
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


def parse_nsys_kern_sum(text: str, steps: int = 1):
    """``nsys stats --report cuda_gpu_kern_sum`` (or ``gpukernsum``) CSV -> per-kernel table."""
    df = _nsys_summary(text, ("name",))
    df.insert(0, "kernel", df["name"])
    df["name"] = df["kernel"].map(short_kernel_name)
    return _finish(df, steps, BASE_COLUMNS + ["med_us", "min_us", "max_us", "std_us", "kernel"])


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
    return _finish(df, steps, order)


def builtin_table(result: RunResult):
    """The ``stage`` lines of ``profile --builtin`` as the common table (share as a fraction)."""
    import pandas as pd

    if not result.stages:
        raise ProfilingError("profile --builtin printed no stage lines")
    rows = [{"name": str(s.get("name")), "calls": to_number(s.get("calls", 0)),
             "total_us": to_number(s.get("total_ms")) * 1e3, "mean_us": to_number(s.get("mean_us")),
             "given": to_number(s.get("share"))} for s in result.stages]
    df = _finish(pd.DataFrame.from_records(rows), int(result.profile.get("steps") or 1), BASE_COLUMNS)
    given = df.pop("given")
    scale = 0.01 if given.sum() > 1.5 else 1.0  # a fraction, or already a percentage
    df["share"] = (given * scale).fillna(df["share"])
    return df


def with_ceiling(df, copy_gbps: float = DEFAULT_COPY_GBPS):
    """Add ``copy_pct``: achieved GB/s as a percentage of the copy bandwidth (where gbps is known)."""
    if "gbps" in df.columns and copy_gbps and copy_gbps > 0:
        df = df.copy()
        df["copy_pct"] = df["gbps"] / copy_gbps * 100.0
    return df


# ------------------------------------------------------------------------------------------------
# Diagnosing a tool's output (pure)
# ------------------------------------------------------------------------------------------------


def permission_message(tool: str) -> str:
    return (f"{tool} may not read the GPU performance counters (ERR_NVGPUCTRPERM): run it as root "
            f"(sudo or CAP_SYS_ADMIN), or let all users profile by loading the nvidia kernel module "
            f"with NVreg_RestrictProfilingToAdminUsers=0 (an 'options nvidia ...' line in "
            f"/etc/modprobe.d/, then reload the driver or reboot); see "
            f"https://developer.nvidia.com/ERR_NVGPUCTRPERM, or use --tool builtin")


def empty_capture_message(tool: str, range_name: str = MEASURE_RANGE) -> str:
    ncu = tool == "ncu"
    where = f"--nvtx-include {ncu_nvtx_include(range_name)}" if ncu else f"--nvtx-capture={nsys_capture(range_name)}"
    runs = ("runs measured steps (--steps >= 1, and --warmup to get past start-up)"
            if range_name == MEASURE_RANGE else f"reaches its {range_name} range")
    return (f"{tool} captured no kernels: the NVTX range {range_name} in domain {NVTX_DOMAIN} "
            f"was not hit ({where}); check that the profile executable {runs}"
            + (" and that --kernel-regex, if given, matches a kernel" if ncu else ""))


def diagnose(tool: str, text: str, range_name: str = MEASURE_RANGE) -> Optional[str]:
    """The one-line explanation of a known profiler failure in ``text``, else None."""
    if any(m in text for m in PERMISSION_MARKERS):
        return permission_message(tool)
    empty = NCU_EMPTY_MARKERS if tool == "ncu" else NSYS_EMPTY_MARKERS
    if any(m in text for m in empty):
        return empty_capture_message(tool, range_name)
    return None


# ------------------------------------------------------------------------------------------------
# Running (glue)
# ------------------------------------------------------------------------------------------------


@dataclass
class ToolRun:
    cmd: List[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class ProfileReport:
    """One profiled configuration: the table, where its files are, and what the program said."""

    tool: str
    table: object  # pandas DataFrame
    steps: int
    out_dir: Path
    result: RunResult = field(default_factory=RunResult)
    ranges: object = None  # nsys: per-NVTX-range DataFrame
    step_us: Optional[float] = None  # wall time of one step when the tool knows it
    commands: List[List[str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    phase: str = "decode"  # what was profiled: decode steps, or the prompt's prefill (PHASES)

    @property
    def unit(self) -> str:
        """What one 'step' of the table is: a decode step, or the prefill."""
        return "prefill" if self.phase == "prefill" else "step"


def run_tool(cmd: Sequence[str], timeout: float, exe: Optional[str] = None) -> ToolRun:
    """Run a profiler (argument list, own process group, killed with its children on timeout)."""
    argv = [str(c) for c in cmd]
    if exe:
        argv[0] = exe
    try:
        proc = spawn_group(argv)
    except OSError as e:
        raise ProfilingError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    out, err, timed_out = communicate_group(proc, timeout)
    if timed_out:
        raise RunError(f"{Path(argv[0]).name} timed out after {timeout:g} s and was killed "
                       f"(raise --timeout, or lower --steps / use --launch-count)",
                       stderr_tail=_tail(err))
    return ToolRun(list(map(str, cmd)), proc.returncode, out, err)


def _program_output(text: str) -> RunResult:
    try:
        return parse_output(text, require_done=False)
    except ProtocolError:
        return RunResult()


def check_run(tool: str, run: ToolRun, extra_text: str = "",
              check_returncode: bool = True, range_name: str = MEASURE_RANGE) -> RunResult:
    """Raise the right error for a profiler run; the profiled program's result lines otherwise."""
    text = "\n".join((run.stdout, run.stderr, extra_text))
    res = _program_output(run.stdout)
    if any(m in text for m in PERMISSION_MARKERS):
        raise ProfilingError(permission_message(tool))
    if res.errors or (res.done not in (None, 0)):
        msg = f"profile (under {tool}) failed"
        if res.done not in (None, 0):
            msg += f" with exit code {res.done} ({EXIT_CODES.get(res.done, 'unknown exit code')})"
        if res.errors:
            msg += f": {res.error_message}"
        raise RunError(msg, returncode=res.done, stderr_tail=_tail(run.stderr), result=res)
    found = diagnose(tool, text, range_name)
    if found:
        raise ProfilingError(found)
    if check_returncode and run.returncode != 0:
        tail = _tail(run.stderr or run.stdout, 5).replace("\n", " | ")
        raise RunError(f"{tool} exited with code {run.returncode}" + (f": {tail}" if tail else ""),
                       returncode=run.returncode, stderr_tail=_tail(run.stderr))
    return res


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _run_kept(cmd: List[str], out_dir: Path, stem: str, timeout: float,
              exe: Optional[str]) -> ToolRun:
    """run_tool, keeping <stem>.cmd.txt (written first), <stem>.stdout.txt and <stem>.stderr.txt."""
    _write(out_dir / f"{stem}.cmd.txt", shlex.join(cmd) + "\n")
    run = run_tool(cmd, timeout, exe)
    _write(out_dir / f"{stem}.stdout.txt", run.stdout)
    _write(out_dir / f"{stem}.stderr.txt", run.stderr)
    return run


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
    prof = _run_kept(nsys_command(binary, args, base, range_name=rng), out_dir, "nsys_profile", timeout,
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
        stats = _run_kept(nsys_stats_command(report, prefix, legacy), out_dir,
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
        tail = _tail(first.stderr or first.stdout, 5).replace("\n", " | ")
        raise RunError(f"nsys stats exited with code {first.returncode}" + (f": {tail}" if tail else ""),
                       returncode=first.returncode, stderr_tail=_tail(first.stderr))
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
    run = _run_kept(cmd, out_dir, "ncu", timeout, exe)
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


def run_builtin(binary: Path, args: Sequence[str], out_dir: Path, timeout: float) -> ProfileReport:
    """profile --builtin (CUDA events per stage); RunError from runner on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), *map(str, args)]
    _write(out_dir / "builtin.cmd.txt", shlex.join(cmd) + "\n")
    res = run_binary(binary, list(args), timeout=timeout)
    _write(out_dir / "builtin.result.json", json.dumps(res.to_dict(), indent=2, default=str))
    table = builtin_table(res)
    steps = int(res.profile.get("steps") or 1)
    step_ms = res.profile.get("step_ms")
    step_us = float(step_ms) * 1e3 if isinstance(step_ms, (int, float)) else None
    return ProfileReport("builtin", table, steps, out_dir, res, None, step_us, [cmd])


def results_dir(base: Path, tool: str, variant: str, batch: int, stamp: Optional[str] = None,
                phase: str = "decode") -> Path:
    """<base>/<tool>-<variant>-b<B>-<timestamp>/, <tool>-prefill-<variant>-... for the prefill
    (a -2, -3 ... suffix if it exists already)."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    what = f"{tool}-prefill" if phase == "prefill" else tool
    path = Path(base) / f"{what}-{variant}-b{batch}-{stamp}"
    n = 2
    while path.exists():
        path = Path(base) / f"{what}-{variant}-b{batch}-{stamp}-{n}"
        n += 1
    return path


def save_report(report: ProfileReport, summary: str = "") -> List[Path]:
    """table.csv, table.json, ranges.csv (nsys), summary.txt and meta.json in the results folder."""
    d = report.out_dir
    d.mkdir(parents=True, exist_ok=True)
    written = [d / "table.csv", d / "table.json"]
    report.table.to_csv(written[0], index=False)
    written[1].write_text(report.table.to_json(orient="records", indent=2))
    if report.ranges is not None:
        written.append(d / "ranges.csv")
        report.ranges.to_csv(written[-1], index=False)
    if summary:
        written.append(d / "summary.txt")
        _write(written[-1], summary + "\n")
    meta = {"tool": report.tool, "phase": report.phase, "steps": report.steps, "step_us": report.step_us,
            "config": report.result.config, "memory": report.result.memory,
            "profile": report.result.profile, "commands": report.commands, "notes": report.notes}
    written.append(d / "meta.json")
    _write(written[-1], json.dumps(meta, indent=2, default=str))
    return written


# ------------------------------------------------------------------------------------------------
# The printed summary
# ------------------------------------------------------------------------------------------------


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
    from tabulate import tabulate

    rows = df if not top else df.head(top)
    cols = [("name", "name", None), ("calls_per_step", f"calls/{unit}", ".3g"),
            ("step_us", f"us/{unit}", ".2f"), ("mean_us", "mean us", ".2f"), ("share", "share", "%")]
    extra = [("gbps", "GB/s", ".0f"), ("copy_pct", "% of copy", ".1f"), ("dram_pct", "DRAM %", ".1f"),
             ("occupancy_pct", "occupancy %", ".1f"), ("sm_pct", "SM %", ".1f"),
             ("med_us", "median us", ".2f"), ("stages", "stages", None), ("kernels", "kernels", None)]
    cols += [c for c in extra if c[0] in df.columns and df[c[0]].notna().any()
             and (df[c[0]].astype(str) != "").any()]
    body = []
    for _, r in rows.iterrows():
        line = []
        for key, _, spec in cols:
            v = r[key]
            if spec == "%":
                line.append(_fmt(v * 100.0, ".1f") + "%" if v == v else "")
            elif spec is None:
                line.append(_clip(v, 56 if key == "name" else 40))
            else:
                line.append(_fmt(v, spec))
        body.append(line)
    return tabulate(body, headers=[c[1] for c in cols], tablefmt="github", disable_numparse=True,
                    colalign=["left" if spec is None else "right" for _, _, spec in cols])


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
                         f"{gbps:.0f} GB/s over the kernel time = {gbps / copy_gbps * 100:.1f}% of "
                         f"the copy bandwidth ({copy_gbps:.0f} GB/s)")
    weights = report.result.memory.get("weights_bytes")
    wall_us = report.step_us or (kernel_us if report.tool != "builtin" else None)
    if isinstance(weights, (int, float)) and weights > 0 and wall_us and not has_bytes and unit == "step":
        gbps = weights / (wall_us * 1e3)
        basis = "step time" if report.step_us else "kernel time"
        lines.append(f"weights ({weights / 1e6:.0f} MB, read once a step) / {basis}: at least "
                     f"{gbps:.0f} GB/s = {gbps / copy_gbps * 100:.1f}% of the copy bandwidth "
                     f"({copy_gbps:.0f} GB/s)")
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

