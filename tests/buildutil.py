"""Helpers for the tests that build and run the real executables.

Kept independent of the gpt2driver package on purpose: these tests check the engine through its
Makefile, command line and result lines only (docs/protocol.md), so a bug in the driver cannot
hide a bug in the engine. Nothing here is a pytest fixture; the test modules build their own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PROGRAMS = ("naive", "kvonly", "optimized", "validate", "profile")
PREFIX = "##GPT2D 1 "

PathLike = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------------------------------------
# Toolchain
# ------------------------------------------------------------------------------------------------


def raw_header_file(path: Path, header: Sequence[int], body: bytes = b"") -> Path:
    """A file of llm.c's layout written by hand: a 256 x int32 header from the first ints (the rest zero),
    then ``body``. For the bad files the package's writers refuse to make."""
    path.write_bytes(struct.pack("<256i", *header, *[0] * (256 - len(header))) + body)
    return path


def token_records(tokens: Sequence[bytes]) -> bytes:
    """A tokenizer file's body: each token as one length byte, then its bytes."""
    return b"".join(bytes([len(t)]) + t for t in tokens)


def cuda_home() -> Path:
    """$CUDA_HOME, default /usr/local/cuda (the Makefile's default too)."""
    return Path(os.environ.get("CUDA_HOME") or "/usr/local/cuda")


def find_nvcc() -> Optional[Path]:
    """nvcc under CUDA_HOME, else on PATH, else None."""
    p = cuda_home() / "bin" / "nvcc"
    if p.is_file() and os.access(p, os.X_OK):
        return p
    w = shutil.which("nvcc")
    return Path(w) if w else None


def has_cublas(d: Optional[PathLike]) -> bool:
    """True when ``d`` holds include/cublasLt.h and a libcublasLt under lib/ or lib64/."""
    if not d:
        return False
    d = Path(d)
    if not (d / "include" / "cublasLt.h").is_file():
        return False
    return any(any((d / lib).glob("libcublasLt.so*")) for lib in ("lib", "lib64"))


def wheel_cublas() -> Optional[Path]:
    """The ``nvidia-cublas`` wheel's directory (nvidia/cu13 or nvidia/cublas), or None."""
    try:
        import nvidia  # namespace package of NVIDIA's pip wheels
    except ImportError:
        return None
    for base in list(getattr(nvidia, "__path__", [])):
        for sub in ("cu13", "cublas"):
            if has_cublas(Path(base) / sub):
                return Path(base) / sub
    return None


def find_cublas(prefer_env: Sequence[str] = ("GPT2DRIVER_CUBLAS_HOME", "CUBLAS_HOME")) -> Optional[Path]:
    """Where cuBLAS is: the first of the environment variables that holds it, then the pip
    wheel, then CUDA_HOME. None when no candidate has both header and library."""
    for var in prefer_env:
        v = os.environ.get(var)
        if v and has_cublas(v):
            return Path(v)
    w = wheel_cublas()
    if w is not None:
        return w
    if has_cublas(cuda_home()):
        return cuda_home()
    return None


GPU_TESTS_INSTALL = 'pip install -e ".[test,gpu]"'


def torch_skip_reason() -> Optional[str]:
    """Why the GPU tests skip on a machine with a GPU (``nvidia-smi -L`` works) but no torch, with
    what to install; None otherwise (no GPU: the gpu marker's skip says so; torch: they run)."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        return None
    try:
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        gpu = False
    if not gpu:
        return None
    return (f"torch is not installed: the GPU tests compare with a PyTorch reference; install "
            f"them with {GPU_TESTS_INSTALL}")


def toolchain_problem() -> Optional[str]:
    """Why the CUDA binaries cannot be built here (a skip reason), or None."""
    if find_nvcc() is None:
        return f"nvcc not found (looked in {cuda_home() / 'bin'} and on PATH)"
    if find_cublas() is None:
        return ("cuBLAS headers/library not found (GPT2DRIVER_CUBLAS_HOME, CUBLAS_HOME, the "
                "nvidia-cublas wheel, CUDA_HOME)")
    return None


# ------------------------------------------------------------------------------------------------
# make
# ------------------------------------------------------------------------------------------------


def make_args(cc: Union[int, str, None] = None, precision: Optional[str] = None,
              build_root: Optional[PathLike] = None, cublas_home: Optional[PathLike] = None,
              jobs: int = 2, targets: Sequence[str] = (), extra: Sequence[str] = ()) -> List[str]:
    """The make command line; arguments left as None are not passed."""
    cmd = ["make", "--no-print-directory", f"-j{jobs}"]
    if cc is not None:
        cmd.append(f"GPU_COMPUTE_CAPABILITY={cc}")
    if precision is not None:
        cmd.append(f"PRECISION={precision}")
    if build_root is not None:
        cmd.append(f"BUILD_ROOT={build_root}")
    if cublas_home is not None:
        cmd.append(f"CUBLAS_HOME={cublas_home}")
    cmd.extend(extra)
    cmd.extend(targets)
    return cmd


def run_make(args: Sequence[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run make in the repository root; stdout and stderr are captured as text."""
    return subprocess.run(list(args), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def build_dir(build_root: PathLike, cc: Union[int, str], precision: str) -> Path:
    return Path(build_root) / f"sm{cc}_{precision.lower()}"


def build_engine(cc: Union[int, str], precision: str, build_root: PathLike,
                 cublas_home: PathLike, jobs: int = 2, timeout: float = 900) -> Path:
    """Build the five executables; return their directory. Raises RuntimeError with make's
    output on failure."""
    cmd = make_args(cc, precision, build_root, cublas_home, jobs=jobs)
    proc = run_make(cmd, timeout=timeout)
    out = build_dir(build_root, cc, precision)
    missing = [p for p in PROGRAMS if not (out / p).is_file()]
    if proc.returncode != 0 or missing:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {proc.returncode}, missing {missing}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return out


# ------------------------------------------------------------------------------------------------
# Running executables and reading their result lines
# ------------------------------------------------------------------------------------------------

_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_record_line(line: str) -> Optional[Tuple[str, Dict[str, str]]]:
    """(record name, {key: raw string value}) of one ``##GPT2D 1`` line, else None.
    Quoted values are unescaped; nothing is converted to numbers."""
    if not line.startswith(PREFIX):
        return None
    rest = line[len(PREFIX):]
    name, _, body = rest.partition(" ")
    fields: Dict[str, str] = {}
    for m in _FIELD.finditer(body):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        fields[m.group(1)] = v
    return name, fields


def ids(text: str) -> List[int]:
    """A comma-separated id list ("" -> [])."""
    return [int(x) for x in text.split(",") if x.strip()]


@dataclass
class Run:
    """One finished run of an executable."""

    cmd: List[str]
    returncode: int
    stdout: str
    stderr: str
    records: List[Tuple[str, Dict[str, str]]] = field(default_factory=list)

    def all(self, name: str) -> List[Dict[str, str]]:
        return [f for n, f in self.records if n == name]

    def one(self, name: str) -> Dict[str, str]:
        found = self.all(name)
        assert len(found) == 1, f"expected one {name!r} record, found {len(found)}\n{self.describe()}"
        return found[0]

    def tokens(self) -> Dict[int, Tuple[List[int], List[int]]]:
        """row -> (prompt ids, generated ids)."""
        return {int(f["row"]): (ids(f["prompt"]), ids(f["ids"])) for f in self.all("tokens")}

    @property
    def done(self) -> Optional[int]:
        d = self.all("done")
        return int(d[-1]["status"]) if d else None

    def describe(self) -> str:
        return (f"$ {shlex.join(self.cmd)}\nexit {self.returncode}\n--- stdout (tail)\n"
                f"{self.stdout[-3000:]}\n--- stderr (tail)\n{self.stderr[-3000:]}")


def run_exe(exe: PathLike, *args: object, timeout: float = 300, expect: Optional[int] = 0,
            cwd: Optional[PathLike] = None) -> Run:
    """Run an executable with a timeout and parse its result lines.

    With ``expect`` set, assert the exit code (and that the ``done`` record agrees when the
    program printed one); the assertion message holds the command and the output's tail."""
    cmd = [str(exe)] + [str(a) for a in args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"timed out after {timeout}s: {shlex.join(cmd)}\n{out[-3000:]}") from None
    recs = [r for r in (parse_record_line(l) for l in proc.stdout.splitlines()) if r is not None]
    run = Run(cmd, proc.returncode, proc.stdout, proc.stderr, recs)
    if expect is not None:
        assert run.returncode == expect, f"expected exit {expect}\n{run.describe()}"
        if run.done is not None:
            assert run.done == expect, f"done status {run.done} != exit {expect}\n{run.describe()}"
    return run


def assert_error_output(run: Run, code: int, *needles: str) -> str:
    """The failure format of docs/protocol.md: exit ``code``, exactly one ``error: ...`` line on
    stderr, an ``error`` record and ``done status=code`` last. Each needle (case-insensitive)
    must occur in the message. Returns the message."""
    assert run.returncode == code, f"expected exit {code}\n{run.describe()}"
    err_lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error: "), run.describe()
    msg = err_lines[0][len("error: "):]
    rec = run.one("error")
    assert rec["msg"] == msg, run.describe()
    assert run.records and run.records[-1][0] == "done", run.describe()
    assert run.done == code, run.describe()
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in error message {msg!r}"
    return msg
