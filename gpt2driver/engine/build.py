"""Build the executables with the repository's Makefile; detect the GPU's compute capability; where
the executables of a (compute capability, precision) live."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

from .. import names, progress
from ..errors import BadInput, BuildError, DriverError
from ..names import PROGRAMS
from ..paths import build_root, require_checkout


@dataclass
class BuildResult:
    path: Path
    rebuilt: List[str] = field(default_factory=list)  # executables whose mtime changed
    output: str = ""


NO_NVIDIA_SMI = "nvidia-smi not found on PATH (no NVIDIA driver?)"  # the one wording of "no GPU"


def detect_cc() -> Tuple[Optional[int], str]:
    """(compute capability as an int such as 90, "") of GPU 0, or (None, reason)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, NO_NVIDIA_SMI
    try:
        proc = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi failed: {e}"
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"nvidia-smi failed: {msg[-1] if msg else f'exit code {proc.returncode}'}"
    lines = [l.strip() for l in proc.stdout.splitlines() if l.strip()]
    if not lines:
        return None, "nvidia-smi lists no GPU"
    try:
        major, _, minor = lines[0].partition(".")
        return int(major) * 10 + int(minor or 0), ""
    except ValueError:
        return None, f"cannot read compute capability {lines[0]!r} from nvidia-smi"


def find_cublas() -> Optional[Path]:
    """The cuBLAS of the ``nvidia-cublas`` wheel when CUBLAS_HOME is unset, else None.

    The wheel installs into the ``nvidia`` namespace package as ``nvidia/cu13`` (CUDA 13) or
    ``nvidia/cublas`` (CUDA 12), each with include/ and lib/.
    """
    if os.environ.get("CUBLAS_HOME"):
        return None
    try:
        import nvidia  # namespace package of NVIDIA's wheels
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for sub in ("cu13", "cublas"):
            d = Path(base) / sub
            if (d / "include").is_dir() and (d / "lib").is_dir():
                return d
    return None


def build_dir(cc: int, precision: str) -> Path:
    """``<build root>/sm<cc>_<precision lower>``, e.g. build/sm90_bf16."""
    return build_root() / f"sm{int(cc)}_{names.precision(precision).lower()}"


def binary_path(program: str, cc: int, precision: str) -> Path:
    """Path of one executable (it may not exist yet)."""
    if program not in PROGRAMS:
        raise BadInput(f"unknown program {program!r}; choose one of {', '.join(PROGRAMS)}")
    return build_dir(cc, precision) / program


def make_command(cc: int, precision: str, jobs: Optional[int] = None) -> List[str]:
    cmd = ["make", f"GPU_COMPUTE_CAPABILITY={int(cc)}", f"PRECISION={names.precision(precision)}",
           f"-j{jobs or os.cpu_count() or 1}"]
    if os.environ.get("GPT2DRIVER_BUILD_DIR"):  # the Makefile's output root
        cmd.append(f"BUILD_ROOT={build_root()}")
    cublas = find_cublas()
    if cublas is not None:
        cmd.append(f"CUBLAS_HOME={cublas}")
    return cmd


# make's own lines around a failed recipe ("make[1]: *** [Makefile:81: x.o] Error 127", "Waiting for
# unfinished jobs"): they say that something failed, not why.
_MAKE_NOISE = re.compile(r"^make(\[\d+\])?: \*\*\* (\[.*\] Error \d+|Waiting for unfinished jobs)")
_MAKEFILE_ERROR = re.compile(r"^\S*[Mm]akefile:\d+: \*\*\* (.*?)\.?  Stop\.$")
_ERROR_WORDS = re.compile(r"error|fatal|not found|no such file|cannot|undefined reference", re.I)


def make_cause(output: str, lines: int = 3) -> str:
    """Why make failed, from its output: the Makefile's own message (its configuration check:
    no nvcc, no cuBLAS...), else the last error lines of the compiler or linker (at most
    ``lines``, joined by " | "), else make's last line."""
    text = [l.strip() for l in output.splitlines() if l.strip()]
    for line in reversed(text):
        m = _MAKEFILE_ERROR.match(line)
        if m:
            return m.group(1)
    errors = [l for l in text if _ERROR_WORDS.search(l) and not _MAKE_NOISE.match(l)]
    errors = list(dict.fromkeys(errors))  # parallel jobs repeat the same line
    if errors:
        return " | ".join(errors[-lines:])
    return text[-1] if text else "no output"


def _mtimes(d: Path) -> Dict[str, Optional[float]]:
    return {p: ((d / p).stat().st_mtime_ns if (d / p).exists() else None) for p in PROGRAMS}


_COMPILERS = ("nvcc", "g++", "gcc", "c++", "clang++", "cc")


def compile_step(line: str) -> Optional[str]:
    """The source file of a compiler command line make printed (a step of the build), else None."""
    words = line.split()
    if not words or Path(words[0]).name not in _COMPILERS:
        return None
    sources = [w for w in words if w.endswith((".cu", ".cpp", ".c"))]
    return Path(sources[-1]).name if sources else Path(words[-1]).name


def count_steps(cmd: List[str], cwd: Path) -> Optional[int]:
    """How many compiler commands make would run (``make -n``), for the progress bar; None when
    it cannot say."""
    try:
        proc = subprocess.run([*cmd, "-n"], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    steps = sum(compile_step(l) is not None for l in proc.stdout.splitlines())
    return steps if proc.returncode == 0 and steps else None


def run_make(cmd: List[str], cwd: Path, quiet: bool = True, keep: int = 40,
             label: str = "make") -> Tuple[int, str]:
    """Run a make command line in ``cwd``: (exit code, its last ``keep`` lines of output). The output
    goes to stderr as it comes unless ``quiet``; quiet, a progress bar ``label`` counts the
    compiler commands (on a terminal). Ctrl-C stops make (it got SIGINT too) and goes on."""
    tail: collections.deque = collections.deque(maxlen=keep)
    total = count_steps(cmd, cwd) if quiet and progress.enabled() else None
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except OSError as e:
        raise BuildError(f"cannot run {cmd[0]}: {e}") from None
    try:
        with progress.bar(label, total if quiet else None) as shown:
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                if not quiet:
                    sys.stderr.write(line)
                elif compile_step(line):
                    shown.advance()
                    shown.describe(f"{label}: {compile_step(line)}")
            rc = proc.wait()
    except BaseException:  # Ctrl-C: make got SIGINT too; give it time to clean up
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return rc, "\n".join(tail)


def make_build(cc: int, precision: str, jobs: Optional[int] = None,
               quiet: bool = False) -> BuildResult:
    """Run make (it decides what is stale); report which executables changed."""
    root = require_checkout()
    out_dir = build_dir(cc, precision)
    cmd = make_command(cc, precision, jobs)
    if shutil.which(cmd[0]) is None:
        raise BuildError("make not found on PATH: install build tools (make, nvcc)")
    before = _mtimes(out_dir)
    rc, output = run_make(cmd, root, quiet, label=f"building {out_dir.name}")
    if rc != 0:
        raise BuildError(failure_message(rc, cmd, output, shown=not quiet), cause=make_cause(output))
    after = _mtimes(out_dir)
    missing = [p for p, t in after.items() if t is None]
    if missing:
        raise BuildError(f"make succeeded but {out_dir} lacks {', '.join(missing)}\n{output}")
    rebuilt = [p for p in PROGRAMS if before[p] != after[p]]
    return BuildResult(out_dir, rebuilt, output)


def failure_message(rc: int, cmd: List[str], output: str, shown: bool) -> str:
    """``make failed (exit code 2): <cause>``, then the command and the tail of make's output
    that does not repeat the cause; no tail when make's output was ``shown`` as it came."""
    cause = make_cause(output)
    lines = [f"make failed (exit code {rc}): {cause}", f"command: {' '.join(cmd)}"]
    if not shown:
        tail = [l for l in output.splitlines()[-15:] if l.strip() and cause not in l]
        lines += tail
    return "\n".join(lines)


def build(cc: int, precision: str, jobs: Optional[int] = None, quiet: bool = True) -> Path:
    """Make sure the executables of (cc, precision) are up to date; return their directory."""
    return make_build(cc, precision, jobs, quiet).path


def no_cc_message(reason: str) -> str:
    return f"cannot detect the GPU's compute capability: {reason}; pass --cc (e.g. --cc 90)"


def resolve_cc(cc: Optional[int], error: Type[DriverError] = BuildError) -> int:
    """The given compute capability, or GPU 0's (nvidia-smi); ``error`` saying how to give it,
    or that the GPU is older than the engine supports."""
    if cc is not None:
        return cc
    found, reason = detect_cc()
    if found is None:
        raise error(no_cc_message(reason))
    if found < names.MIN_CC:
        raise error(f"the GPU's compute capability {found} is older than the {names.MIN_CC} the "
                    f"engine needs")
    return found
