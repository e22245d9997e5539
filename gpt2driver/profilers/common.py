"""What the three profilers share: the NVTX names of docs/protocol.md, the profile executable's
command line, running a tool (argument lists, timeouts, never a shell) with its output kept in a
results folder, telling a known failure (no counter access, nothing captured) in one line, and the
report every tool returns.

NVTX (docs/protocol.md): everything lives in the domain ``decode``; each measured decode step is a
push/pop range ``MEASURE``, the prompt's prefill the range ``PREFILL`` (``phase='prefill'``: the tools
then capture that range instead). nsys writes a range as range@domain, ncu as domain@range with a
trailing ``/`` for push/pop ranges.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ..engine.runner import engine_args, run_captured, tail
from ..errors import ProfilingError, ProtocolError, RunError
from ..names import PROFILE_TOOLS
from ..protocol import EXIT_CODES, RunResult, parse_output

TOOLS = PROFILE_TOOLS

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


# H100 80GB HBM3 device-to-device copy, read + write counted (docs/perf-notes.md): the tables' default when a
# caller gives none; the CLI always passes the measured or given bandwidth, or None.
DEFAULT_COPY_GBPS = 3000.0

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


def require_tool(tool: str) -> str:
    """The path of nsys/ncu, or ProfilingError saying it is not installed and what to do."""
    path = shutil.which(tool)
    if path is None:
        raise ProfilingError(f"{tool} is not installed (not found on PATH): "
                             f"{INSTALL_HINT.get(tool, 'install it')}, or use --tool builtin")
    return path


def profile_args(checkpoint: Path, variant: str = "optimized", batch: int = 1, steps: int = 16,
                 warmup: int = 8, prompt_len: Optional[int] = None, builtin: bool = False,
                 ablate: str = "none") -> List[str]:
    """The profile executable's arguments (quiet: result lines only; ``ablate``: the switches
    of the optimized runner it builds)."""
    args = engine_args(checkpoint, batch=batch, prompt_len=prompt_len, warmup=warmup, quiet=True,
                       ablate=ablate)
    args += ["--variant", variant, "--steps", str(steps)]
    return args + ["--builtin"] if builtin else args


def split_list(text: Optional[str]) -> List[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (for --metrics / --sections)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


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
        run = run_captured(argv, timeout)
    except OSError as e:
        raise ProfilingError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    if run.timed_out:
        raise RunError(f"{Path(argv[0]).name} timed out after {timeout:g} s and was killed "
                       f"(raise --timeout, or lower --steps / use --launch-count)",
                       stderr_tail=tail(run.stderr))
    return ToolRun(list(map(str, cmd)), run.returncode, run.stdout, run.stderr)


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
        raise RunError(msg, returncode=res.done, stderr_tail=tail(run.stderr), result=res)
    found = diagnose(tool, text, range_name)
    if found:
        raise ProfilingError(found)
    if check_returncode and run.returncode != 0:
        why = tail(run.stderr or run.stdout, 5).replace("\n", " | ")
        raise RunError(f"{tool} exited with code {run.returncode}" + (f": {why}" if why else ""),
                       returncode=run.returncode, stderr_tail=tail(run.stderr))
    return res


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def run_kept(cmd: List[str], out_dir: Path, stem: str, timeout: float,
              exe: Optional[str]) -> ToolRun:
    """run_tool, keeping <stem>.cmd.txt (written first), <stem>.stdout.txt and <stem>.stderr.txt."""
    write_text(out_dir / f"{stem}.cmd.txt", shlex.join(cmd) + "\n")
    run = run_tool(cmd, timeout, exe)
    write_text(out_dir / f"{stem}.stdout.txt", run.stdout)
    write_text(out_dir / f"{stem}.stderr.txt", run.stderr)
    return run


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
        write_text(written[-1], summary + "\n")
    meta = {"tool": report.tool, "phase": report.phase, "steps": report.steps, "step_us": report.step_us,
            "config": report.result.config, "memory": report.result.memory,
            "profile": report.result.profile, "commands": report.commands, "notes": report.notes}
    written.append(d / "meta.json")
    write_text(written[-1], json.dumps(meta, indent=2, default=str))
    return written
