"""The driver's one parser against output captured from real runs of the executables on the device
(NVIDIA H100 80GB HBM3, tests/fixtures/device/, see its README). Checks the invariants a driver relies on."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from gpt2driver import protocol
from gpt2driver.engine.runner import run_binary
from gpt2driver.errors import RunError

DEV = Path(__file__).parent / "fixtures" / "device"


def parse(name: str) -> protocol.RunResult:
    return protocol.parse_output((DEV / name).read_text())


@pytest.mark.parametrize("name,variant,B,gen", [
    ("optimized_b16_g512.txt", "optimized", 16, 512),
    ("naive_b1_g512.txt", "naive", 1, 512),
    ("kvonly_b4_g512.txt", "kvonly", 4, 512),
])
def test_generation_runs(name, variant, B, gen):
    r = parse(name)
    assert r.ok and r.done == 0
    c = r.config
    assert (c["variant"], c["B"], c["gen"], c["precision"]) == (variant, B, gen, "BF16")
    assert c["device"] == "NVIDIA H100 80GB HBM3" and c["cc"] == 90
    assert (c["L"], c["NH"], c["C"], c["V"], c["Vp"], c["maxT"]) == (12, 12, 768, 50257, 50304, 1024)
    # memory: the parts add up, weights are the 124M model in bf16 (256-byte aligned tensors)
    m = r.memory
    assert m["total_bytes"] == m["weights_bytes"] + m["kv_bytes"] + m["act_bytes"]
    assert 124_000_000 * 2 < m["weights_bytes"] < 124_500_000 * 2
    # timing is the median of the timed reps, and tokens/s = B * gen / total
    timed = r.timed_reps()
    assert len(timed) == r.timing["reps"] >= 1
    assert r.timing["tokens_per_s"] == pytest.approx(statistics.median(x["tokens_per_s"] for x in timed), rel=1e-4)
    for rep in r.reps:
        assert rep["tokens_per_s"] == pytest.approx(B * gen / rep["total_ms"] * 1000, rel=1e-3)
        assert rep["total_ms"] == pytest.approx(rep["prefill_ms"] + rep["decode_ms"], rel=1e-3)
    # one tokens line per row, gen ids each, all inside the vocabulary
    assert sorted(r.tokens) == list(range(B))
    for prompt, ids in r.tokens.values():
        assert prompt == [50256] and len(ids) == gen
        assert all(0 <= t < 50257 for t in ids)


def test_speed_ordering_on_the_device():
    """What the captured runs measured: the cache and the tricks pay off at these sizes."""
    naive = parse("naive_b1_g512.txt").timing["step_ms"]
    opt16 = parse("optimized_b16_g512.txt").timing["tokens_per_s"]
    kv4 = parse("kvonly_b4_g512.txt").timing["tokens_per_s"]
    assert naive > 0 and opt16 > kv4 > 0


@pytest.mark.parametrize("name,precision", [("validate_b2_bf16.txt", "BF16"), ("validate_b2_fp32.txt", "FP32")])
def test_validate_runs(name, precision):
    r = parse(name)
    assert r.ok and r.config["precision"] == precision
    df = protocol.vsteps_frame(r)
    assert set(df["variant"]) == {"kvonly", "optimized"}
    assert len(df) == 2 * 64 * 2  # variants x steps x rows
    assert (df["pos"] == df["step"] + r.config["prompt_len"] - 1).all()
    for s in r.vsummary:
        assert s["result"] == "PASS"
        sub = df[df["variant"] == s["variant"]]
        assert s["max_abs"] == pytest.approx(sub["max_abs"].max(), rel=1e-5)
        assert s["match_frac"] == pytest.approx(sub["match"].mean(), rel=1e-6)
        assert s["max_abs"] <= s["tol_max_abs"] and s["rmse"] <= s["tol_rmse"]
    top = protocol.parse_top3(df.iloc[0]["ref_top3"])
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    if precision == "FP32":  # teacher-forced fp32 paths agree to rounding
        assert df["max_abs"].max() < 1e-4 and df["match"].all()


def test_profile_builtin_stages():
    r = parse("profile_builtin_b1.txt")
    names = [s["name"] for s in r.stages]
    assert {"qkv", "attn", "attproj", "fc", "fcproj", "logits", "sample"} <= set(names)
    assert sum(s["share"] for s in r.stages) == pytest.approx(1.0, abs=1e-3)
    assert r.profile["steps"] == 16 and r.profile["step_ms"] > 0
    layer_stages = [s for s in r.stages if s["name"] == "qkv"]
    assert layer_stages[0]["calls"] == 12 * 16  # every layer of every measured step


def test_sampled_text_run_keeps_prompt_and_text():
    r = parse("kvonly_sampled_text.txt")
    assert r.config["sampling"] == "random" and r.config["top_k"] == 40
    for prompt, ids in r.tokens.values():
        assert prompt == [464, 2068, 7586, 21831] and len(ids) == 32
    assert any(line.startswith("The quick brown fox") for line in r.text)


def test_real_cuda_error_output_becomes_run_error(tmp_path):
    """A real failure (exit 4, error record, stderr line) replayed through run_binary."""
    out = (DEV / "validate_cuda_error.txt").read_text()
    r = protocol.parse_output(out)
    assert r.done == 4 and not r.ok and "linear_mma.cu:211" in r.error_message
    stub = tmp_path / "validate"
    stub.write_text("#!/bin/sh\ncat '%s'\necho 'error: CUDA error' >&2\nexit 4\n" % (DEV / "validate_cuda_error.txt"))
    stub.chmod(0o755)
    with pytest.raises(RunError) as e:
        run_binary(stub, [], timeout=30)
    assert "linear_mma.cu:211" in str(e.value)
