"""``gpt2driver doctor``: what this machine has for building, running and profiling the engine
(make, the C++ compiler, nvcc, cuBLAS, the GPU and its compute capability, nsys / ncu, the optional
Python packages, the tokenizer, the builds so far), and whether the main job (build the executables
and run them on a GPU) can run here: :func:`blocking` names what it lacks."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .engine import build as build_mod
from .files import tokenizer as tokenizer_files
from .names import MIN_CC, PROGRAMS
from .errors import DriverError
from .paths import build_root, require_checkout

OPTIONAL = (("matplotlib", "sweep and bench plots"), ("safetensors", "checkpoint convert"),
            ("torch", "bench's Hugging Face rows and copy bandwidth, the GPU tests' reference"),
            ("transformers", "bench's Hugging Face rows"))
# tiktoken's gpt2 encoding: the files its first use downloads into its cache.
TIKTOKEN_GPT2 = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                 "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")


@dataclass
class Check:
    """One line of the report: ``needed`` when the main job cannot run without it."""

    name: str
    status: str
    ok: bool = True
    needed: bool = False


def output_line(cmd: List[str], containing: str = "") -> Optional[str]:
    """The first line of a command's output that contains ``containing``; None if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [l.strip() for l in proc.stdout.splitlines() if containing in l and l.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def tool(name: str, exe: Optional[str], version_arg: str = "--version",
         missing: str = "not found", needed: bool = True) -> Check:
    if not exe:
        return Check(name, missing, False, needed)
    return Check(name, f"{exe}: {output_line([exe, version_arg]) or '?'}", True, needed)


def cublas_check(cuda_home: Path) -> Check:
    wheel = build_mod.find_cublas()
    libs = sorted((cuda_home / "lib64").glob("libcublasLt.so*")) if (cuda_home / "lib64").is_dir() else []
    if os.environ.get("CUBLAS_HOME"):
        return Check("cuBLAS", f"CUBLAS_HOME={os.environ['CUBLAS_HOME']}", needed=True)
    if wheel:
        return Check("cuBLAS", f"nvidia-cublas wheel: {wheel}", needed=True)
    if libs:
        return Check("cuBLAS", str(libs[0]), needed=True)
    return Check("cuBLAS", "not found (set CUBLAS_HOME, install CUDA, or pip install nvidia-cublas)",
                 False, True)


def gpu_checks() -> List[Check]:
    gpu = shutil.which("nvidia-smi") and output_line(
        ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
    cc, reason = build_mod.detect_cc()
    if cc is None:
        cc_check = Check("compute capability", build_mod.no_cc_message(reason), False, True)
    elif cc < MIN_CC:
        cc_check = Check("compute capability", f"{cc}: older than the {MIN_CC} the engine needs",
                         False, True)
    else:
        cc_check = Check("compute capability", f"{cc} (use --cc {cc})", needed=True)
    cc_check.needed = bool(gpu)  # without a GPU, the GPU is what is missing
    return [Check("GPU", gpu or f"none found: {reason or 'nvidia-smi failed'}", bool(gpu), True),
            cc_check]


def tiktoken_cached() -> bool:
    """True when tiktoken's cache holds the gpt2 encoding's files (no download needed)."""
    cache = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
             or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    return all((Path(cache) / hashlib.sha1(url.encode()).hexdigest()).is_file()
               for url in TIKTOKEN_GPT2)


def tokenizer_check() -> Check:
    path = tokenizer_files.tokenizer_file()
    if path is not None:
        try:
            tok = tokenizer_files.read_tokenizer(path)
        except tokenizer_files.TokenizerError as e:
            return Check("tokenizer", f"${tokenizer_files.ENV_TOKENIZER}: {e}", False)
        return Check("tokenizer", f"{path} ({tok.vocab_size} tokens)")
    if tiktoken_cached():
        return Check("tokenizer", "tiktoken's gpt2 encoding (cached)")
    return Check("tokenizer", "tiktoken's gpt2 encoding, downloaded on first use (offline: "
                              f"gpt2driver tokenizer export elsewhere, then ${tokenizer_files.ENV_TOKENIZER})")


def repository_check() -> Check:
    """The checkout the engine is built from (a package installed without it cannot build)."""
    try:
        return Check("repository", str(require_checkout()), needed=True)
    except DriverError as e:
        return Check("repository", str(e), False, needed=True)


def build_checks() -> List[Check]:
    root = build_root()
    dirs = sorted(d for d in root.glob("sm*_*") if d.is_dir()) if root.is_dir() else []
    rows = []
    for d in dirs:
        built = [p for p in PROGRAMS if (d / p).is_file() and os.access(d / p, os.X_OK)]
        rows.append(Check(f"build {d.name}", ", ".join(built) or "nothing built"))
    return rows or [Check("builds", f"none under {root} (run gpt2driver build)")]


def doctor_report() -> List[Check]:
    """The checks describing the toolchain, GPU, Python packages, tokenizer and builds."""
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = shutil.which("nvcc") or (str(cuda_home / "bin/nvcc") if (cuda_home / "bin/nvcc").exists() else None)
    cxx = os.environ.get("CXX") or "g++"
    rows = [repository_check(), tool("make", shutil.which("make"), missing="not found (install make)"),
            tool("C++ compiler", shutil.which(cxx), missing=f"{cxx} not found (install g++ or set CXX)"),
            tool("nvcc", nvcc, missing="not found (install the CUDA toolkit or set CUDA_HOME)"),
            cublas_check(cuda_home), *gpu_checks()]
    rows += [Check(t, shutil.which(t) or "not on PATH (optional: profile --tool " + t + ")")
             for t in ("nsys", "ncu")]
    for mod, why in OPTIONAL:
        found = importlib.util.find_spec(mod) is not None
        rows.append(Check(mod, "installed" if found else f"not installed (optional: {why})"))
    return rows + [tokenizer_check(), *build_checks()]


def blocking(rows: List[Check]) -> List[str]:
    """The names of what the main job needs and this machine lacks."""
    return [r.name for r in rows if r.needed and not r.ok]
