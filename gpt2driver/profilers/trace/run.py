"""Running the profile executable with ``--trace --stamps`` and keeping everything it gives in a results
folder: the raw output, trace.json, timeline.png, kernels.csv, steps.csv, stamps.csv."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ...engine.runner import communicate_group, spawn_group, tail
from ...errors import RunError
from ..common import ProfileReport, ToolRun, check_run
from .chrome import write_chrome_trace
from .frames import kernel_table, link_table, stage_budget, stamp_table, step_totals
from .model import Timeline, parse_trace
from .png import plot_step

TRACE_FLAGS = ("--trace", "--stamps")  # added to the profile executable's arguments
CUPTI_DIR_ENV = "GPT2D_CUPTI_DIR"  # where the executable looks for libcupti after the toolkit


def cupti_wheel_dir() -> Optional[Path]:
    """The folder of the nvidia-cuda-cupti wheel's libcupti, when that wheel is installed."""
    try:
        import nvidia  # namespace package of NVIDIA's pip wheels
    except ImportError:
        return None
    for base in list(getattr(nvidia, "__path__", [])):
        for sub in ("cu13/lib", "cuda_cupti/lib"):
            d = Path(base) / sub
            if any(d.glob("libcupti.so*")):
                return d
    return None


@dataclass
class TraceReport(ProfileReport):
    """run_trace's report: the common one (its table: kernel_table) and the timeline."""

    timeline: Optional[Timeline] = None


def run_trace(binary: Path, args: Sequence[str], out_dir: Path, timeout: float) -> TraceReport:
    """Run the profile executable with ``args`` (the usual ones and TRACE_FLAGS) and keep, in ``out_dir``: the raw
    output (trace.stdout.txt), trace.json (Chrome trace), timeline.png, kernels.csv, steps.csv,
    links.csv (what each stage adds to the step), stamps.csv and budget.csv (the stamped kernels' stages and
    completion tail per label). The report's table is kernels.csv's (one row per kernel of every step).

    RunError when the executable fails (no CUPTI, no GPU: its one-line reason), ProfilingError when
    the trace is empty."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), *map(str, args)]
    (out_dir / "trace.cmd.txt").write_text(shlex.join(cmd) + "\n")
    env = dict(os.environ)
    wheel = cupti_wheel_dir()
    if wheel and CUPTI_DIR_ENV not in env:
        env[CUPTI_DIR_ENV] = str(wheel)
    try:
        proc = spawn_group(cmd, env)
    except OSError as e:
        raise RunError(f"cannot start {binary}: {e.strerror or e}") from None
    out, err, timed_out = communicate_group(proc, timeout)
    (out_dir / "trace.stdout.txt").write_text(out)
    (out_dir / "trace.stderr.txt").write_text(err)
    if timed_out:
        raise RunError(f"{Path(binary).name} --trace timed out after {timeout:g} s and was killed (raise "
                       f"--timeout or lower --steps)", stderr_tail=tail(err))
    res = check_run("trace", ToolRun(cmd, proc.returncode, out, err))  # its one-line error, if it failed
    tl = parse_trace(out)
    write_chrome_trace(tl, out_dir / "trace.json")
    kt = kernel_table(tl)
    kt.to_csv(out_dir / "kernels.csv", index=False)
    tot = step_totals(tl)
    tot.to_csv(out_dir / "steps.csv", index=False)
    link_table(tl).to_csv(out_dir / "links.csv", index=False)
    if tl.stamped:
        stamp_table(tl).to_csv(out_dir / "stamps.csv", index=False)
        stage_budget(tl).to_csv(out_dir / "budget.csv", index=False)
    why = plot_step(tl, out_dir / "timeline.png")
    step_us = float(tot["step_us"].mean()) if "step_us" in tot and len(tot) else None
    return TraceReport("trace", kt, tl.steps, out_dir, res, None, step_us, [cmd], [why] if why else [],
                       timeline=tl)
