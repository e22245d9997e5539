"""Shared fixtures: protocol fixtures on disk, stand-in executables, GPU detection."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def has_gpu() -> bool:
    """True when ``nvidia-smi -L`` runs and succeeds."""
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not has_gpu():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi -L failed)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture
def fixture_text():
    """Read a captured (or hand-written) output from tests/fixtures/."""
    return lambda name: (FIXTURES / name).read_text()


def write_script(path: Path, body: str) -> Path:
    """An executable Python script with a shebang to this interpreter."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(0o755)
    return path


@pytest.fixture
def make_script(tmp_path):
    """make_script(name, body) -> Path of an executable Python script in tmp_path."""
    return lambda name, body: write_script(tmp_path / name, body)


# A stand-in for all five executables: it reads the common flags and prints protocol lines; each
# --no-<switch> makes it slower by a quarter. FAKE_LOG: append each invocation to this file.
# FAKE_FAIL=<program>:<B>: fail that run with exit 4. FAKE_VALIDATE=1: validation fails.
FAKE_ENGINE = r'''
import os, sys
prog = os.path.basename(sys.argv[0])
a = sys.argv[1:]
def opt(flags, default):
    for f in flags:
        if f in a:
            return a[a.index(f) + 1]
    return default
B = int(opt(["-b", "--batch"], 1)); G = int(opt(["-g", "--gen"], 64))
R = int(opt(["--repeat"], 1)); W = int(opt(["--warmup"], 1))
PL = int(opt(["--prompt-len"], 1))
if os.environ.get("FAKE_LOG"):
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(prog + " " + " ".join(a) + "\n")
P = "##GPT2D 1"
print(f"{prog}: fake engine B={B} gen={G}")
print(f'{P} config program={prog} variant={prog} precision=BF16 B={B} prompt_len={PL} gen={G} '
      f'L=12 NH=12 C=768 V=50257 Vp=50304 maxT=1024 device="Fake GPU 80GB" cc=90 '
      f'checkpoint="{opt(["-e"], "")}"')
if os.environ.get("FAKE_FAIL") == f"{prog}:{B}":
    sys.stderr.write("error: out of device memory: need 99999 MiB\n")
    print(f'{P} error msg="out of device memory: need 99999 MiB"')
    print(f"{P} done status=4")
    sys.exit(4)
print(f"{P} memory weights_bytes=248915968 kv_bytes={B * 1024} act_bytes=1000 total_bytes=248918000 device_used_bytes=300000000")
if prog == "validate":
    fail = os.environ.get("FAKE_VALIDATE") == "1"
    for v in opt(["--variants"], "kvonly,optimized").split(","):
        for s in range(4):
            bad = fail and v == "optimized" and s == 2
            mx = 0.9 if bad else 0.01 * (s + 1)
            print(f"{P} vstep variant={v} step={s} pos={s} row=0 max_abs={mx} rmse={mx / 5} ref_tok=11 "
                  f"test_tok={12 if bad else 11} match={0 if bad else 1} ref_top3=11:9;5:8;7:6 test_top3=11:9;5:8;7:6")
        res = "FAIL" if fail and v == "optimized" else "PASS"
        print(f"{P} vsummary variant={v} steps=4 rows=1 max_abs={0.9 if res == 'FAIL' else 0.04} rmse=0.01 "
              f"match_frac={0.75 if res == 'FAIL' else 1} tol_max_abs=0.5 tol_rmse=0.05 tol_match=0.9 result={res}")
    print(f"{P} done status={1 if fail else 0}")
    sys.exit(1 if fail else 0)
if prog == "profile":
    for name, us in (("qkv", 12.0), ("attn", 8.0), ("fc", 15.0)):
        print(f"{P} stage name={name} calls=192 total_ms={192 * us / 1000:.6g} mean_us={us} share={us / 35:.6g}")
    print(f"{P} profile variant={opt(['--variant'], 'optimized')} steps={opt(['--steps'], 16)} step_ms=0.42 tokens_per_s={B / 0.42e-3:.6g}")
    print(f"{P} done status=0")
    sys.exit(0)
speed = {"naive": 1.0, "kvonly": 5.0, "optimized": 10.0}[prog]
speed /= 1 + 0.25 * sum(x.startswith("--no-") for x in a)  # each ablation switch off: slower
for i in range(W + R):
    total = B * G / (speed * 100 * B ** 0.5) * 1000 * (1 + 0.01 * i)
    print(f"{P} rep index={i} warmup={int(i < W)} total_ms={total:.6g} prefill_ms=1 decode_ms={total - 1:.6g} "
          f"step_ms={(total - 1) / max(G - 1, 1):.6g} tokens_per_s={B * G / total * 1000:.6g}")
total = B * G / (speed * 100 * B ** 0.5) * 1000 * (1 + 0.01 * (W + (R - 1) // 2))
print(f"{P} timing reps={R} total_ms={total:.6g} prefill_ms=1 decode_ms={total - 1:.6g} "
      f"step_ms={(total - 1) / max(G - 1, 1):.6g} tokens_per_s={B * G / total * 1000:.6g}")
for row in range(B):
    print(f"{P} tokens row={row} prompt=50256 ids={','.join(str(15496 + k % 3) for k in range(G))}")
print(f"{P} done status=0")
'''


def stand_in_checkpoint(path: Path, cfg=None, dtype: str = "bf16") -> Path:
    """A checkpoint the pre-flight check reads as a whole (GPT-2 124M's header, by default, and
    the file's exact size) without its weights: the rest of the file is a hole, written in no
    time. For the stand-in executables, which read nothing."""
    from gpt2driver.files import checkpoint as ck

    cfg = cfg or ck.PRESETS["gpt2"]
    with open(path, "wb") as f:
        f.write(ck.header_bytes(cfg, dtype))
        f.truncate(ck.expected_file_bytes(cfg, dtype))
    return path


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """Stand-in executables in place of make, a fake GPU (cc 90) and a fake default model.

    Returns a namespace: bin_dir, log (invocations, one line each), calls() -> list of lines,
    model (the checkpoint path handed to the executables).
    """
    from gpt2driver.engine import build as build_mod
    from gpt2driver.files import models
    from gpt2driver.names import PROGRAMS

    bin_dir = tmp_path / "bin" / "sm90_bf16"
    bin_dir.mkdir(parents=True)
    for prog in PROGRAMS:
        write_script(bin_dir / prog, FAKE_ENGINE)
    model = stand_in_checkpoint(tmp_path / "model.bin")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_VALIDATE", raising=False)
    builds = []

    def fake_make_build(cc, precision, jobs=None, quiet=False):
        builds.append((cc, precision))
        return build_mod.BuildResult(bin_dir, [], "")

    monkeypatch.setattr(build_mod, "make_build", fake_make_build)
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (90, ""))
    monkeypatch.setattr(models, "resolve_model", lambda model_name, precision, checkpoint=None: model)
    monkeypatch.setattr(models, "ensure_default_model", lambda precision: model)

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return SimpleNamespace(bin_dir=bin_dir, log=log, calls=calls, model=model, builds=builds)
