"""gpt2_optim as a peer in the bench, with a stand-in checkout: its Makefile (make all
GPU_COMPUTE_CAPABILITY=.. PRECISION=BF16 LLM_C_ROOT=..) installs a script as bin/inference_gpt2optimcu
that prints gpt2_optim's output format (two "Token per second" lines); the llm.c stand-in is a
directory with llmc/. No code of gpt2_optim or llm.c is used."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from gpt2driver import names
from gpt2driver.cli import cli
from gpt2driver.errors import ExperimentError
from gpt2driver.experiments.bench import gpt2optim

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# The stand-in program: naive at 100 tok/s x B, KV cache at 800 tok/s x B (its own timing);
# STANDIN_LOG gets its argv; STANDIN_FAIL=1 makes it exit 1 without speed lines.
STAND_IN = r'''
import os, sys
a = sys.argv[1:]
if os.environ.get("STANDIN_LOG"):
    open(os.environ["STANDIN_LOG"], "a").write(" ".join(a) + "\n")
if os.environ.get("STANDIN_FAIL"):
    print("[CUDA ERROR] at file llmc/cuda_common.h:50: out of memory", file=sys.stderr)
    sys.exit(1)
B, G = int(a[a.index("-b") + 1]), int(a[a.index("-g") + 1])
for name, speed in (("Base", 100.0), ("KV Cache", 800.0)):
    total = B * G / (speed * B) * 1000
    print(f"\n{name} implementation: total time = {total:.2f} ms, forward time = {total * 0.9:.2f} ms")
    print(f"Token per second: {B * G / (total / 1000.0):.2f}")
    print("Generated tokens:")
    for b in range(B):
        print(f"Batch {b}:\n<text>\n===")
print("\nUsing argmax sampling, outputs should match almost identically.")
print("Token mismatches: 0 (showing up to 20)")
'''

MAKEFILE_OK = """\
all:
\tmkdir -p bin
\tcp stand_in.py bin/inference_gpt2optimcu
\tchmod +x bin/inference_gpt2optimcu
\techo "$(GPU_COMPUTE_CAPABILITY) $(PRECISION) $(LLM_C_ROOT)" > bin/made_with.txt
"""

# What nvcc says when llm.c's cudaMemAdvise call meets CUDA 13's signature.
MAKEFILE_CUDA13 = """\
all:
\t@echo "nvcc --threads=0 -t=0 --use_fast_math -std=c++17 -O3 src/inference_gpt2_optimize.cu"
\t@echo 'llmc/cuda_common.h(104): error: argument of type "int" is incompatible with parameter of type "cudaMemLocation"' >&2
\t@echo "1 error detected in the compilation of src/inference_gpt2_optimize.cu." >&2
\t@exit 2
"""


@pytest.fixture
def trees(tmp_path, monkeypatch):
    """make(makefile) -> (gpt2_optim dir, llm.c dir): the stand-in checkouts."""
    def make(makefile=MAKEFILE_OK):
        root, llmc = tmp_path / "gpt2_optim", tmp_path / "llm.c"
        (llmc / "llmc").mkdir(parents=True, exist_ok=True)
        root.mkdir(exist_ok=True)
        (root / "Makefile").write_text(makefile)
        (root / "stand_in.py").write_text(f"#!{sys.executable}\n" + textwrap.dedent(STAND_IN))
        return root, llmc
    monkeypatch.setenv("STANDIN_LOG", str(tmp_path / "standin.log"))
    monkeypatch.delenv("STANDIN_FAIL", raising=False)
    monkeypatch.delenv("GPT2DRIVER_TOKENIZER", raising=False)
    return make


def standin_calls(tmp_path):
    log = tmp_path / "standin.log"
    return [l.split() for l in log.read_text().splitlines()] if log.exists() else []


def test_parse_output():
    text = ("Base implementation: total time = 512.00 ms, forward time = 500.00 ms\n"
            "Token per second: 2000.00\nGenerated tokens:\nBatch 0:\nx\n===\n"
            "\nKV Cache implementation: total time = 64.00 ms, forward time = 60.00 ms\n"
            "Token per second: 16000.00\n")
    assert gpt2optim.parse_output(text) == {
        names.GPT2OPTIM_NAIVE: {"total_ms": 512.0, "tokens_per_s": 2000.0},
        names.GPT2OPTIM_KVCACHE: {"total_ms": 64.0, "tokens_per_s": 16000.0}}
    assert gpt2optim.parse_output("no speed here") == {}


def test_build_hint_names_cuda13():
    hint = gpt2optim.build_hint('x.h(1): error: argument of type "int" is incompatible with '
                                'parameter of type "cudaMemLocation"')
    assert "CUDA 13" in hint and "cudaMemAdvise" in hint and "cudaMemLocation" in hint
    assert gpt2optim.build_hint("nvcc fatal: unsupported gpu architecture") == ""


def test_find_trees(tmp_path, trees):
    root, llmc = trees()
    found = gpt2optim.find_trees(str(root), str(llmc))
    assert found.program == root / "bin" / "inference_gpt2optimcu"
    assert gpt2optim.find_trees(str(root)).llmc == llmc  # llm.c next to gpt2_optim by default
    with pytest.raises(ExperimentError, match="no Makefile"):
        gpt2optim.find_trees(str(llmc))
    with pytest.raises(ExperimentError, match="no llmc/ directory.*--llmc"):
        gpt2optim.find_trees(str(root), str(root))


def test_bench_with_gpt2optim(fake_engine, trees, tmp_path):
    root, llmc = trees()
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["bench", "-b", "1", "-b", "4", "-n", "16", "--repeat", "2",
                                   "--no-hf", "--copy-gbps", "3000", "--gpt2-optim", str(root),
                                   "--llmc", str(llmc), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (root / "bin" / "made_with.txt").read_text().split() == ["90", "BF16", str(llmc)]
    calls = standin_calls(tmp_path)
    assert len(calls) == 2 * (1 + 2)  # per B: one warm-up run, two timed ones
    c = calls[-1]
    assert c[c.index("-b") + 1] == "4" and c[c.index("-g") + 1] == "16" and c[c.index("-m") + 1] == "1"
    assert c[c.index("-e") + 1] == str(fake_engine.model) and "-tk" not in c
    df = pd.read_csv(out / "results.csv")
    peer = df[df["variant"].str.startswith("gpt2_optim")]
    assert list(zip(peer["variant"], peer["batch"])) == [
        ("gpt2_optim-naive", 1), ("gpt2_optim-kvcache", 1), ("gpt2_optim-naive", 4),
        ("gpt2_optim-kvcache", 4)]
    assert set(peer["status"]) == {"ok"} and set(peer["timed_by"]) == {names.TIMED_BY_GPT2OPTIM}
    kv4 = peer[(peer["variant"] == "gpt2_optim-kvcache") & (peer["batch"] == 4)].iloc[0]
    assert kv4["tokens_per_s_median"] == pytest.approx(3200.0) and kv4["reps"] == 2
    assert kv4["step_ms"] == pytest.approx(kv4["total_ms"] / 16) and kv4["floor_pct"] > 0
    naive4 = df[(df["variant"] == "naive") & (df["batch"] == 4)].iloc[0]
    assert kv4["vs_naive"] == pytest.approx(3200.0 / naive4["tokens_per_s_median"])
    assert set(df[df["variant"].isin(names.VARIANTS)]["timed_by"]) == {names.TIMED_BY_ENGINE}
    assert "| timed by" in res.output and "gpt2_optim's own Token per second" in res.output
    assert "its rows are timed by its own program" in res.output
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["gpt2_optim"] == str(root) and meta["llmc"] == str(llmc)
    assert meta["gpt2_optim_build"] == f"make all GPU_COMPUTE_CAPABILITY=90 PRECISION=BF16 LLM_C_ROOT={llmc}"


def test_bench_gpt2optim_build_failure_says_why(fake_engine, trees, tmp_path):
    root, llmc = trees(MAKEFILE_CUDA13)
    res = CliRunner().invoke(cli, ["bench", "-b", "1", "-n", "8", "--no-hf", "--gpt2-optim",
                                   str(root), "--llmc", str(llmc), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "gpt2_optim's make failed (exit code 2)" in res.output
    assert "CUDA 13 takes a cudaMemLocation" in res.output
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    peer = df[df["variant"].str.startswith("gpt2_optim")]
    assert set(peer["status"]) == {"failed"} and len(peer) == 2
    assert all("cudaMemAdvise" in e for e in peer["error"])
    assert set(df[df["variant"].isin(names.VARIANTS)]["status"]) == {"ok"}  # ours still ran
    assert "Error: 2 of 5 row(s) failed: gpt2_optim-naive B=1, gpt2_optim-kvcache B=1" in res.output


def test_bench_gpt2optim_program_failure_is_a_row(fake_engine, trees, tmp_path, monkeypatch):
    root, llmc = trees()
    monkeypatch.setenv("STANDIN_FAIL", "1")
    res = CliRunner().invoke(cli, ["bench", "-b", "2", "-n", "8", "--no-hf", "--gpt2-optim",
                                   str(root), "--llmc", str(llmc), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    bad = df[df["variant"] == "gpt2_optim-naive"].iloc[0]
    assert bad["status"] == "failed" and "exited with code 1" in bad["error"]
    assert "out of memory" in bad["error"]


def test_bench_gpt2optim_checkout_checked_first(fake_engine, tmp_path):
    res = CliRunner().invoke(cli, ["bench", "--gpt2-optim", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no Makefile there" in res.output
    assert fake_engine.calls() == []
