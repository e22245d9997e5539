"""The Makefile: every supported (compute capability, precision) builds all five executables, the
executables answer --help / --version / bad flags without a GPU, and configuration mistakes stop
make with a message that names the problem.

Builds go to a temporary BUILD_ROOT (one directory per combination, built once per session).
About 30 s per combination with -j2 on a 2-core machine, seven combinations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import buildutil as bu

pytestmark = pytest.mark.slow

# (compute capability, precision) pairs that must build.
COMBOS = [(cc, p) for cc in (75, 80, 90) for p in ("BF16", "FP32")] + [(90, "FP16")]
COMBO_IDS = [f"sm{cc}_{p.lower()}" for cc, p in COMBOS]

# Variables the Makefile reads that must not leak in from the caller's environment.
_MAKE_ENV_VARS = ("GPU_COMPUTE_CAPABILITY", "PRECISION", "BUILD_ROOT", "CUBLAS_HOME", "MAKEFLAGS",
                  "MFLAGS", "MAKELEVEL")


def _clean_env():
    env = dict(os.environ)
    for v in _MAKE_ENV_VARS:
        env.pop(v, None)
    return env


def _make(args, timeout=900):
    return subprocess.run(args, cwd=bu.REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=_clean_env())


def _need_make():
    if shutil.which("make") is None:
        pytest.skip("make not found")


def _need_toolchain():
    _need_make()
    problem = bu.toolchain_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("build_root")


@pytest.fixture(scope="session")
def builds(build_root):
    """combo -> (directory, make output, seconds); each combination is built on first use."""
    cache = {}

    def get(cc, precision):
        if (cc, precision) not in cache:
            import time

            _need_toolchain()
            t0 = time.monotonic()
            cmd = bu.make_args(cc, precision, build_root, bu.find_cublas(), jobs=2)
            proc = _make(cmd)
            cache[(cc, precision)] = (bu.build_dir(build_root, cc, precision), proc,
                                      time.monotonic() - t0)
        return cache[(cc, precision)]

    return get


# ------------------------------------------------------------------------------------------------
# Successful builds
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cc, precision", COMBOS, ids=COMBO_IDS)
def test_build_all_programs(builds, cc, precision):
    out, proc, secs = builds(cc, precision)
    assert proc.returncode == 0, f"make failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "built naive kvonly optimized validate profile in" in proc.stdout
    assert out.name == f"sm{cc}_{precision.lower()}"
    for prog in bu.PROGRAMS:
        exe = out / prog
        assert exe.is_file(), f"{exe} missing"
        assert os.access(exe, os.X_OK), f"{exe} not executable"
    # -DPRECISION_<P> and the requested architecture were on every nvcc line.
    nvcc_lines = [l for l in proc.stdout.splitlines() if "nvcc" in l and " -c " in l]
    assert nvcc_lines, proc.stdout[-2000:]
    for line in nvcc_lines:
        assert f"-DPRECISION_{precision}" in line, line
        assert f"arch=compute_{cc}" in line and f"sm_{cc}" in line, line
    cuobjdump = bu.cuda_home() / "bin" / "cuobjdump"
    if cuobjdump.is_file():  # not part of the minimal toolkit on the CPU machine
        listing = subprocess.run([str(cuobjdump), "--list-elf", str(out / "kvonly")],
                                 capture_output=True, text=True, timeout=60).stdout
        assert f"sm_{cc}" in listing, listing


def test_rebuild_is_a_no_op(builds, build_root):
    out, proc, _ = builds(90, "BF16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = bu.make_args(90, "BF16", build_root, bu.find_cublas(), jobs=2)
    # Bring the build up to date first (sources may have changed since the session's build),
    # then a second make must find nothing to do.
    first = _make(cmd)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: (out / p).stat().st_mtime_ns for p in bu.PROGRAMS}
    again = _make(cmd, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nvcc" not in again.stdout, f"make rebuilt something:\n{again.stdout[-3000:]}"
    assert {p: (out / p).stat().st_mtime_ns for p in bu.PROGRAMS} == before


# ------------------------------------------------------------------------------------------------
# The executables' command line, without a GPU
# ------------------------------------------------------------------------------------------------

EXTRA_HELP = {"optimized": ["--no-graph", "--no-gemv", "--no-fused", "--no-split-attn", "--one-layer-weights"],
              "validate": ["--variants", "--max-abs", "--max-rmse", "--min-match"],
              "profile": ["--variant", "--steps", "--builtin"]}


def _runnable(exe: Path):
    """Skip when the executable cannot even start here (shared libraries missing)."""
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    if proc.returncode == 127 or "error while loading shared libraries" in proc.stderr:
        pytest.skip(f"{exe.name} cannot start on this machine: {proc.stderr.strip()[:300]}")


@pytest.mark.parametrize("cc, precision", COMBOS, ids=COMBO_IDS)
def test_cli_without_gpu(builds, cc, precision):
    out, proc, _ = builds(cc, precision)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _runnable(out / "kvonly")
    for prog in bu.PROGRAMS:
        exe = out / prog
        for flag in ("--help", "-h"):
            r = bu.run_exe(exe, flag, timeout=60)
            assert r.stdout.startswith(f"usage: {prog} "), r.describe()
            assert f"Build: {precision}" in r.stdout, r.describe()
            for opt in ["--checkpoint", "--batch", "--gen", "--dump-logits", "--dump-stride",
                        "--prompt-len", "--top-p", "--quiet"] + EXTRA_HELP.get(prog, []):
                assert opt in r.stdout, f"{opt} missing from {prog} --help"
            assert r.records == [] and r.stderr == "", r.describe()
        r = bu.run_exe(exe, "--version", timeout=60)
        assert r.stdout.strip() == f"gpt2driver {prog} protocol=1 precision={precision}", r.describe()
        # --help wins even after other flags, before any file or device is touched.
        r = bu.run_exe(exe, "-e", "/nonexistent/model.bin", "-b", "4", "--help", timeout=60)
        assert r.stdout.startswith(f"usage: {prog} ")

        r = bu.run_exe(exe, "--bogus-flag", timeout=60, expect=None)
        bu.assert_error_output(r, 2, "--bogus-flag")
        r = bu.run_exe(exe, timeout=60, expect=None)
        bu.assert_error_output(r, 2, "checkpoint")
        r = bu.run_exe(exe, "-e", "x.bin", "--batch", "zero", timeout=60, expect=None)
        bu.assert_error_output(r, 2, "--batch")
        r = bu.run_exe(exe, "-e", "x.bin", "--gen", timeout=60, expect=None)
        bu.assert_error_output(r, 2, "--gen")
        r = bu.run_exe(exe, "-e", "x.bin", "--top-p", "1.5", timeout=60, expect=None)
        bu.assert_error_output(r, 2, "--top-p")
        if prog in ("naive", "kvonly"):  # ablation switches: optimized, validate and profile only
            r = bu.run_exe(exe, "-e", "x.bin", "--no-graph", timeout=60, expect=None)
            bu.assert_error_output(r, 2, "--no-graph")


# ------------------------------------------------------------------------------------------------
# Configuration errors: make stops before compiling anything, naming the problem
# ------------------------------------------------------------------------------------------------


def _expect_make_error(tmp_path, args, *needles):
    _need_make()
    root = tmp_path / "root"
    proc = _make(["make", "--no-print-directory", f"BUILD_ROOT={root}"] + list(args), timeout=120)
    assert proc.returncode != 0, f"make succeeded with {args}:\n{proc.stdout[-2000:]}"
    err = proc.stderr
    assert "***" in err, err  # make's own $(error) marker: stopped by a check, not by a compiler
    for n in needles:
        assert n in err, f"{n!r} not in make's message:\n{err}"
    assert "nvcc" not in proc.stdout, f"make started compiling:\n{proc.stdout[-2000:]}"
    assert not any(root.rglob("*.o")), "objects were built despite the error"
    return err


def _cublas_arg():
    c = bu.find_cublas()
    return [f"CUBLAS_HOME={c}"] if c else []


def test_make_without_compute_capability(tmp_path):
    err = _expect_make_error(tmp_path, ["PRECISION=BF16"] + _cublas_arg(), "GPU_COMPUTE_CAPABILITY",
                             "not set")
    assert "90" in err  # suggests a value


def test_make_empty_compute_capability(tmp_path):
    _expect_make_error(tmp_path, ["GPU_COMPUTE_CAPABILITY="] + _cublas_arg(), "GPU_COMPUTE_CAPABILITY",
                       "not set")


@pytest.mark.parametrize("value", ["abc", "9.0", "sm_90", "9"])
def test_make_invalid_compute_capability(tmp_path, value):
    _expect_make_error(tmp_path, [f"GPU_COMPUTE_CAPABILITY={value}"] + _cublas_arg(),
                       "GPU_COMPUTE_CAPABILITY", value, "not a compute capability")


@pytest.mark.parametrize("value", ["60", "52"])
def test_make_too_old_compute_capability(tmp_path, value):
    _expect_make_error(tmp_path, [f"GPU_COMPUTE_CAPABILITY={value}"] + _cublas_arg(),
                       "GPU_COMPUTE_CAPABILITY", value, "too old", "70")


@pytest.mark.parametrize("value", ["FP64", "INT8", "half"])
def test_make_bad_precision(tmp_path, value):
    _expect_make_error(tmp_path, ["GPU_COMPUTE_CAPABILITY=90", f"PRECISION={value}"] + _cublas_arg(),
                       "PRECISION", value, "FP32", "FP16", "BF16")


def test_make_cublas_home_without_library(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_make_error(tmp_path, ["GPU_COMPUTE_CAPABILITY=90", f"CUBLAS_HOME={empty}"], "CUBLAS_HOME",
                       str(empty), "libcublasLt")


def test_make_cublas_home_without_header(tmp_path):
    fake = tmp_path / "fake_cublas"
    (fake / "lib").mkdir(parents=True)
    (fake / "lib" / "libcublasLt.so.13").write_bytes(b"")
    (fake / "include").mkdir()
    _expect_make_error(tmp_path, ["GPU_COMPUTE_CAPABILITY=90", f"CUBLAS_HOME={fake}"], "cublasLt.h",
                       str(fake / "include"))


def test_make_help_needs_no_configuration():
    _need_make()
    proc = _make(["make", "--no-print-directory", "help"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "GPU_COMPUTE_CAPABILITY" in proc.stdout and "PRECISION" in proc.stdout
