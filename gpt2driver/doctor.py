"""``gpt2driver doctor``: what this machine has for building, running and profiling the engine
(nvcc, the GPU and its compute capability, cuBLAS, nsys / ncu, the optional Python packages, the
builds so far)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

from .engine import build as build_mod
from .names import PROGRAMS
from .paths import build_root

OPTIONAL = (("matplotlib", "sweep and bench plots"), ("safetensors", "checkpoint convert"),
            ("torch", "bench's Hugging Face rows and copy bandwidth"),
            ("transformers", "bench's Hugging Face rows"))


def output_line(cmd: List[str], containing: str = "") -> Optional[str]:
    """The first line of a command's output that contains ``containing``; None if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [l.strip() for l in proc.stdout.splitlines() if containing in l and l.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def doctor_report() -> List[tuple]:
    """(check, status) pairs describing the toolchain, GPU and builds."""
    rows = []
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = shutil.which("nvcc") or (str(cuda_home / "bin/nvcc") if (cuda_home / "bin/nvcc").exists() else None)
    rows.append(("nvcc", f"{nvcc}: {output_line([nvcc, '--version'], 'release')}" if nvcc
                 else "not found (install the CUDA toolkit or set CUDA_HOME)"))
    gpu = shutil.which("nvidia-smi") and output_line(
        ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
    rows.append(("GPU", gpu or "none found (nvidia-smi missing or failing)"))
    cc, reason = build_mod.detect_cc()
    rows.append(("compute capability", f"{cc} (use --cc {cc})" if cc else reason))
    wheel = build_mod.find_cublas()
    libs = sorted((cuda_home / "lib64").glob("libcublas.so*")) if (cuda_home / "lib64").is_dir() else []
    if os.environ.get("CUBLAS_HOME"):
        cublas = f"CUBLAS_HOME={os.environ['CUBLAS_HOME']}"
    elif wheel:
        cublas = f"nvidia-cublas wheel: {wheel}"
    elif libs:
        cublas = f"{libs[0]}"
    else:
        cublas = "not found (set CUBLAS_HOME, install CUDA, or pip install nvidia-cublas)"
    rows.append(("cuBLAS", cublas))
    for tool in ("nsys", "ncu"):
        rows.append((tool, shutil.which(tool) or "not on PATH"))
    for mod, why in OPTIONAL:
        found = importlib.util.find_spec(mod) is not None
        rows.append((mod, "installed" if found else f"not installed (optional: {why})"))
    root = build_root()
    dirs = sorted(d for d in root.glob("sm*_*") if d.is_dir()) if root.is_dir() else []
    for d in dirs:
        built = [p for p in PROGRAMS if (d / p).is_file() and os.access(d / p, os.X_OK)]
        rows.append((f"build {d.name}", ", ".join(built) or "nothing built"))
    if not dirs:
        rows.append(("builds", f"none under {root} (run gpt2driver build)"))
    return rows
