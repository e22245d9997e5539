"""Profiling with the ``profile`` executable: its built-in stage timer now, nsys/ncu later."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

from .protocol import RunResult
from .runner import engine_args, run_binary

TOOLS = ("builtin", "nsys", "ncu")


class ProfilingError(RuntimeError):
    pass


def require_tool(tool: str) -> str:
    """The path of nsys/ncu, or ProfilingError saying it is not installed."""
    path = shutil.which(tool)
    if path is None:
        name = {"nsys": "Nsight Systems", "ncu": "Nsight Compute"}.get(tool, tool)
        raise ProfilingError(f"{tool} is not installed (not found on PATH): install {name} "
                             f"or use --tool builtin")
    return path


def profile_args(checkpoint: Path, variant: str = "optimized", batch: int = 1, steps: int = 16,
                 warmup: int = 8, prompt_len: Optional[int] = None, builtin: bool = False) -> List[str]:
    args = engine_args(checkpoint, batch=batch, prompt_len=prompt_len, warmup=warmup, quiet=True)
    args += ["--variant", variant, "--steps", str(steps)]
    return args + ["--builtin"] if builtin else args


def external_command(tool: str, binary: Path, args: Sequence[str], out: Path,
                     metrics: Sequence[str] = ()) -> List[str]:
    """The nsys/ncu command line for the profile executable (NVTX ranges select the steps)."""
    if tool == "nsys":
        return ["nsys", "profile", "--trace=cuda,nvtx", "--force-overwrite=true", "-o", str(out),
                str(binary), *args]
    cmd = ["ncu", "--nvtx", "--nvtx-include", "MEASURE@decode/", "-f", "-o", str(out)]
    if metrics:
        cmd += ["--metrics", ",".join(metrics)]
    return cmd + [str(binary), *args]


def run_builtin(binary: Path, args: Sequence[str], timeout: float) -> RunResult:
    return run_binary(binary, list(args), timeout=timeout)


def stage_table(result: RunResult) -> str:
    from tabulate import tabulate

    rows = sorted(result.stages, key=lambda s: -float(s.get("total_ms", 0) or 0))
    shares = [float(s.get("share", 0) or 0) for s in rows]
    scale = 1.0 if sum(shares) > 1.5 else 100.0  # share as a fraction (or already in percent)
    body = [[s.get("name"), s.get("calls"), s.get("total_ms"), s.get("mean_us"),
             f"{scale * sh:.1f}%"] for s, sh in zip(rows, shares)]
    return tabulate(body, headers=["stage", "calls", "total ms", "mean us", "share"],
                    tablefmt="github", floatfmt=".3f")


def not_implemented(tool: str, cmd: Sequence[str]) -> ProfilingError:
    return ProfilingError(f"profiling with {tool} is not implemented in the driver yet; "
                          f"run it yourself: {shlex.join(cmd)}")
