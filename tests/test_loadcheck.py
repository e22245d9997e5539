"""The engine's C++ checkpoint and tokenizer loaders, run on the host through build/host/loadcheck,
on files written by gpt2driver.files.checkpoint / gpt2driver.files.tokenizer.

loadcheck prints ``checkpoint``, ``load``, ``tokenizer`` and ``done`` result lines (docs/protocol.md
format); bad files exit 3 and bad command lines exit 2, each with one ``error: ...`` line on stderr
and an ``error`` record.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

import buildutil as bu
from gpt2driver.files import checkpoint as ck
from gpt2driver.files import tokenizer as tz
from gpt2driver.files.checkpoint import ModelConfig

TINY = ModelConfig.custom(layers=2, heads=2, channels=32, max_seq_len=16, vocab_size=100)
TINY_TOKENS = [bytes([65 + i % 26]) * (1 + i % 5) + str(i).encode() for i in range(TINY.vocab_size)]
GPT2_TOKENIZER = bu.SHARED_DATA / "gpt2_tokenizer.bin"


@pytest.fixture(scope="session")
def loadcheck():
    """build/host/loadcheck, built once with ``make host``."""
    if shutil.which("make") is None:
        pytest.skip("make not found")
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    proc = subprocess.run(["make", "--no-print-directory", "host"], cwd=bu.REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"make host failed:\n{proc.stdout}\n{proc.stderr}"
    exe = bu.REPO_ROOT / "build" / "host" / "loadcheck"
    assert exe.is_file(), proc.stdout
    return exe


def lc(exe, *args, expect=0):
    return bu.run_exe(exe, *args, timeout=120, expect=expect)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_params():
    return ck.random_params(TINY, seed=3)


def write_ckpt(path, params=None, dtype="fp32", cfg=TINY, seed=3):
    if params is None:
        params = ck.random_params(cfg, seed=seed)
    ck.write_checkpoint(path, cfg, params, dtype=dtype)
    return path


def patch_int(path, index, value):
    with open(path, "r+b") as f:
        f.seek(4 * index)
        f.write(struct.pack("<i", value))


def flat_params(cfg, params):
    return np.concatenate([params[n].reshape(-1) for n, _ in ck.param_shapes(cfg)])


def bf16_round(x):
    return ck.bf16_bits_to_f32(ck.f32_to_bf16_bits(x))


def u32(values):
    """Bit patterns printed as ints, read back as uint32 (the tool may print them signed)."""
    return [int(v) & 0xFFFFFFFF for v in values]


# ------------------------------------------------------------------------------------------------
# Good checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, version", [("fp32", 3), ("bf16", 5)])
def test_good_checkpoint_header(loadcheck, tmp_path, dtype, version):
    path = write_ckpt(tmp_path / f"m_{dtype}.bin", dtype=dtype)
    r = lc(loadcheck, "--checkpoint", path)
    h = r.one("checkpoint")
    assert int(h["version"]) == version and h["dtype"] == dtype
    assert (int(h["maxT"]), int(h["V"]), int(h["L"]), int(h["NH"]), int(h["C"]), int(h["Vp"])) == (
        16, 100, 2, 2, 32, 128)
    assert int(h["params"]) == TINY.num_parameters
    assert int(h["file_bytes"]) == ck.expected_file_bytes(TINY, dtype) == path.stat().st_size
    assert r.records[-1] == ("done", {"status": "0"}) and r.stderr == ""
    # -e is the short form.
    assert lc(loadcheck, "-e", path).one("checkpoint") == h


def test_load_fp32_is_exact(loadcheck, tmp_path, tiny_params):
    path = write_ckpt(tmp_path / "m.bin", tiny_params)
    load = lc(loadcheck, "--checkpoint", path, "--load", "fp32").one("load")
    flat = flat_params(TINY, tiny_params)
    assert load["dtype"] == "fp32" and int(load["n"]) == flat.size == TINY.num_parameters
    assert u32(bu.ids(load["first_bits"])) == flat[:8].view(np.uint32).tolist()
    assert float(load["sum"]) == pytest.approx(flat.astype(np.float64).sum(), rel=1e-5, abs=1e-3)


def test_load_bf16_from_fp32_file(loadcheck, tmp_path, tiny_params):
    path = write_ckpt(tmp_path / "m.bin", tiny_params)
    load = lc(loadcheck, "--checkpoint", path, "--load", "bf16").one("load")
    flat = flat_params(TINY, tiny_params)
    assert load["dtype"] == "bf16" and int(load["n"]) == flat.size
    assert bu.ids(load["first_bits"]) == ck.f32_to_bf16_bits(flat[:8]).astype(int).tolist()
    want = bf16_round(flat).astype(np.float64).sum()
    assert float(load["sum"]) == pytest.approx(want, rel=1e-5, abs=1e-3)
    # The rounding matters at this precision: the plain fp32 sum differs measurably.
    assert abs(flat.astype(np.float64).sum() - want) > 1e-5 * abs(want)


def test_load_fp16_from_fp32_file(loadcheck, tmp_path, tiny_params):
    path = write_ckpt(tmp_path / "m.bin", tiny_params)
    load = lc(loadcheck, "--checkpoint", path, "--load", "fp16").one("load")
    flat = flat_params(TINY, tiny_params)
    assert load["dtype"] == "fp16" and int(load["n"]) == flat.size
    assert bu.ids(load["first_bits"]) == flat[:8].astype(np.float16).view(np.uint16).astype(int).tolist()


def test_load_from_bf16_file(loadcheck, tmp_path, tiny_params):
    path = write_ckpt(tmp_path / "m.bin", tiny_params, dtype="bf16")
    flat = flat_params(TINY, tiny_params)
    bits = ck.f32_to_bf16_bits(flat[:8])
    same = lc(loadcheck, "-e", path, "--load", "bf16").one("load")
    assert bu.ids(same["first_bits"]) == bits.astype(int).tolist()
    assert float(same["sum"]) == pytest.approx(bf16_round(flat).astype(np.float64).sum(), rel=1e-5,
                                               abs=1e-3)
    wide = lc(loadcheck, "-e", path, "--load", "fp32").one("load")
    assert u32(bu.ids(wide["first_bits"])) == ck.bf16_bits_to_f32(bits).view(np.uint32).tolist()
    half = lc(loadcheck, "-e", path, "--load", "fp16").one("load")
    assert bu.ids(half["first_bits"]) == (
        ck.bf16_bits_to_f32(bits).astype(np.float16).view(np.uint16).astype(int).tolist())


# Values at the edges of the conversions: ties (to even), fp16 subnormals and overflow, signed zero.
EDGE_BF16 = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8 + 2 ** -20), 3.0e38, -0.0, 1e-40, 0.1, -7.5]
EDGE_FP16 = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 65519.0, 65520.0, 3e-6, -6.0e-8, -0.0, 2.0 ** -14]


@pytest.mark.parametrize("target, values", [("bf16", EDGE_BF16), ("fp16", EDGE_FP16)])
def test_conversion_edge_values(loadcheck, tmp_path, tiny_params, target, values):
    params = {k: v.copy() for k, v in tiny_params.items()}
    params["wte"].reshape(-1)[:8] = np.asarray(values, dtype=np.float32)
    path = write_ckpt(tmp_path / "edge.bin", params)
    load = lc(loadcheck, "-e", path, "--load", target).one("load")
    x = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore"):
        want = ck.f32_to_bf16_bits(x) if target == "bf16" else x.astype(np.float16).view(np.uint16)
    assert bu.ids(load["first_bits"]) == want.astype(int).tolist()


# ------------------------------------------------------------------------------------------------
# Bad checkpoints: exit 3
# ------------------------------------------------------------------------------------------------


def expect_input_error(exe, *args_and_needles):
    *args, needles = args_and_needles
    r = lc(exe, *args, expect=None)
    return bu.assert_error_output(r, 3, *needles)


def test_missing_checkpoint(loadcheck, tmp_path):
    p = tmp_path / "nope.bin"
    expect_input_error(loadcheck, "-e", p, [str(p), "cannot open"])


def test_truncated_header(loadcheck, tmp_path):
    p = tmp_path / "short.bin"
    p.write_bytes(write_ckpt(tmp_path / "m.bin").read_bytes()[:100])
    expect_input_error(loadcheck, "-e", p, [str(p), "truncated"])
    (tmp_path / "empty.bin").write_bytes(b"")
    expect_input_error(loadcheck, "-e", tmp_path / "empty.bin", ["truncated"])


def test_wrong_magic(loadcheck, tmp_path):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 0, 20240328)  # a tokenizer's magic
    expect_input_error(loadcheck, "-e", p, ["magic", "20240328"])


@pytest.mark.parametrize("version", [4, 1, 2, 6, -3])
def test_unsupported_version(loadcheck, tmp_path, version):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 1, version)
    expect_input_error(loadcheck, "-e", p, ["version", str(version)])


FIELDS = ["max_seq_len", "vocab_size", "num_layers", "num_heads", "channels", "padded_vocab_size"]


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("index, name", list(enumerate(FIELDS, start=2)), ids=FIELDS)
def test_nonpositive_header_field(loadcheck, tmp_path, index, name, value):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, index, value)
    expect_input_error(loadcheck, "-e", p, [name, str(value)])


def test_huge_header_field(loadcheck, tmp_path):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 6, 1 << 30)  # channels
    expect_input_error(loadcheck, "-e", p, ["channels"])


def test_channels_not_divisible_by_heads(loadcheck, tmp_path):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 5, 3)  # num_heads = 3, channels = 32
    expect_input_error(loadcheck, "-e", p, ["channels", "32", "num_heads", "3"])


def test_padded_vocab_smaller_than_vocab(loadcheck, tmp_path):
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 7, 64)  # padded 64 < vocab 100
    expect_input_error(loadcheck, "-e", p, ["padded_vocab", "64", "100"])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("delta", [-4, -2, -TINY.channels * 4, 4, 1, 1 << 12])
def test_file_size_disagrees_with_header(loadcheck, tmp_path, dtype, delta):
    src = write_ckpt(tmp_path / "m.bin", dtype=dtype)
    data = src.read_bytes()
    p = tmp_path / "bad.bin"
    p.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    msg = expect_input_error(loadcheck, "-e", p, [str(len(data) + delta), str(len(data))])
    assert ("truncated" if delta < 0 else "trailing") in msg


def test_header_of_other_shape(loadcheck, tmp_path):
    """A consistent-looking header whose shape does not fit the data that follows."""
    p = write_ckpt(tmp_path / "m.bin")
    patch_int(p, 4, 3)  # three layers announced, two stored
    expect_input_error(loadcheck, "-e", p, ["L=3", "truncated"])


# ------------------------------------------------------------------------------------------------
# Tokenizers
# ------------------------------------------------------------------------------------------------


def write_tok(path, tokens=TINY_TOKENS, eot=None, version=2):
    if eot is None and version == 2:
        eot = len(tokens) - 1
    return tz.write_tokenizer(path, tokens, eot, version=version)


def test_good_tokenizer(loadcheck, tmp_path):
    p = write_tok(tmp_path / "tok.bin")
    t = lc(loadcheck, "--tokenizer", p).one("tokenizer")
    assert (int(t["version"]), int(t["vocab"]), int(t["eot"])) == (2, 100, 99)
    t = lc(loadcheck, "-tk", write_tok(tmp_path / "tok7.bin", eot=7)).one("tokenizer")
    assert int(t["eot"]) == 7


def test_version1_tokenizer_has_no_eot(loadcheck, tmp_path):
    p = write_tok(tmp_path / "tok1.bin", version=1)
    t = lc(loadcheck, "-tk", p).one("tokenizer")
    assert (int(t["version"]), int(t["vocab"]), int(t["eot"])) == (1, 100, -1)


def test_checkpoint_and_tokenizer_together(loadcheck, tmp_path):
    ckpt = write_ckpt(tmp_path / "m.bin")
    tok = write_tok(tmp_path / "tok.bin")
    r = lc(loadcheck, "-e", ckpt, "-tk", tok)
    assert [n for n, _ in r.records] == ["checkpoint", "tokenizer", "done"]


def test_tokenizer_bad_magic(loadcheck, tmp_path):
    p = bu.raw_header_file(tmp_path / "t.bin", [20240326, 2, 100, 99], bu.token_records(TINY_TOKENS))
    expect_input_error(loadcheck, "-tk", p, ["magic", "20240326"])


@pytest.mark.parametrize("version", [3, 0])
def test_tokenizer_bad_version(loadcheck, tmp_path, version):
    p = bu.raw_header_file(tmp_path / "t.bin", [tz.MAGIC, version, 100, 99], bu.token_records(TINY_TOKENS))
    expect_input_error(loadcheck, "-tk", p, ["version", str(version)])


def test_tokenizer_bad_vocab_and_eot(loadcheck, tmp_path):
    p = bu.raw_header_file(tmp_path / "v.bin", [tz.MAGIC, 2, 0, 0])
    expect_input_error(loadcheck, "-tk", p, ["vocab"])
    p = bu.raw_header_file(tmp_path / "e.bin", [tz.MAGIC, 2, 100, 100], bu.token_records(TINY_TOKENS))
    expect_input_error(loadcheck, "-tk", p, ["EOT", "100"])


def test_tokenizer_truncated(loadcheck, tmp_path):
    data = write_tok(tmp_path / "tok.bin").read_bytes()
    for name, cut in (("header", 500), ("between", None), ("inside", -2)):
        p = tmp_path / f"t_{name}.bin"
        if cut is None:  # drop the last token whole
            cut = len(data) - 1 - len(TINY_TOKENS[-1])
        p.write_bytes(data[:cut])
        expect_input_error(loadcheck, "-tk", p, ["truncated"])


def test_tokenizer_zero_length_token(loadcheck, tmp_path):
    body = bu.token_records(TINY_TOKENS[:5]) + b"\x00" + bu.token_records(TINY_TOKENS[6:])
    p = bu.raw_header_file(tmp_path / "t.bin", [tz.MAGIC, 2, 100, 99], body)
    expect_input_error(loadcheck, "-tk", p, ["token 5", "length 0"])


def test_tokenizer_trailing_bytes(loadcheck, tmp_path):
    p = bu.raw_header_file(tmp_path / "t.bin", [tz.MAGIC, 2, 100, 99], bu.token_records(TINY_TOKENS) + b"xyz")
    expect_input_error(loadcheck, "-tk", p, ["3 trailing bytes"])


def test_tokenizer_vocab_differs_from_checkpoint(loadcheck, tmp_path):
    ckpt = write_ckpt(tmp_path / "m.bin")
    tok = write_tok(tmp_path / "tok.bin", tokens=TINY_TOKENS + [b"extra"])
    msg = expect_input_error(loadcheck, "-e", ckpt, "-tk", tok, ["101", "100"])
    assert "vocab" in msg.lower()


@pytest.mark.skipif(not GPT2_TOKENIZER.is_file(), reason=f"{GPT2_TOKENIZER} not present")
def test_real_gpt2_tokenizer(loadcheck, tmp_path):
    t = lc(loadcheck, "-tk", GPT2_TOKENIZER).one("tokenizer")
    assert (int(t["vocab"]), int(t["eot"])) == (50257, 50256)
    # and it pairs with a checkpoint of GPT-2's vocabulary
    cfg = ModelConfig.custom(layers=1, heads=1, channels=8, max_seq_len=4)
    ckpt = ck.make_random_checkpoint(tmp_path / "v50257.bin", cfg, dtype="bf16", seed=1)
    r = lc(loadcheck, "-e", ckpt, "-tk", GPT2_TOKENIZER)
    assert int(r.one("checkpoint")["Vp"]) == 50304 and int(r.one("tokenizer")["vocab"]) == 50257


# ------------------------------------------------------------------------------------------------
# Command line: exit 2
# ------------------------------------------------------------------------------------------------


def test_help(loadcheck):
    r = lc(loadcheck, "--help")
    assert r.stdout.startswith("usage: loadcheck") and r.records == []


@pytest.mark.parametrize("args, needle", [
    ([], "--checkpoint"),
    (["--frobnicate"], "--frobnicate"),
    (["--checkpoint"], "--checkpoint"),
    (["-tk"], "-tk"),
])
def test_usage_errors(loadcheck, args, needle):
    r = lc(loadcheck, *args, expect=None)
    bu.assert_error_output(r, 2, needle)


def test_bad_load_type(loadcheck, tmp_path):
    ckpt = write_ckpt(tmp_path / "m.bin")
    r = lc(loadcheck, "-e", ckpt, "--load", "fp8", expect=None)
    bu.assert_error_output(r, 2, "--load", "fp8")


# ------------------------------------------------------------------------------------------------
# Issue 15: non-regular files at once; one set of header limits (docs/protocol.md) in both readers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "fifo"])
@pytest.mark.parametrize("flag", ["--checkpoint", "--tokenizer"])
def test_non_regular_file_is_one_line_exit_3_at_once(loadcheck, tmp_path, kind, flag):
    import os

    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    run = bu.run_exe(loadcheck, flag, path, timeout=10, expect=None)  # a FIFO used to block here
    what = "checkpoint" if flag == "--checkpoint" else "tokenizer"
    assert_fail = bu.assert_error_output(run, 3, f"{what} '{path}' is not a regular file",
                                         "FIFO" if kind == "fifo" else "directory")
    assert assert_fail
    with pytest.raises(ck.CheckpointError, match="not a regular file"):
        ck.read_header(path)


def documented_limits():
    """{field: (low, high)} of docs/protocol.md's "Checkpoint header limits" table, and the head
    sizes the engine runs as written there."""
    import re

    text = (bu.REPO_ROOT / "docs" / "protocol.md").read_text()
    section = text.split("## Checkpoint header limits", 1)[1].split("\n## ", 1)[0]
    limits = {}
    for m in re.finditer(r"^\| `(\w+)` \| (`?\w+`?)\.\.(\d+)", section, re.M):
        low = m.group(2).strip("`")
        limits[m.group(1)] = (int(low) if low.isdigit() else low, int(m.group(3)))
    sizes = re.search(r"head size, `channels / num_heads`, is one of: ([\d, ]+)\.", section)
    return limits, tuple(int(x) for x in sizes.group(1).split(","))


def test_documented_limits_are_the_python_readers():
    limits, sizes = documented_limits()
    assert set(limits) == set(ck.HEADER_LIMITS)
    assert {k: hi for k, (lo, hi) in limits.items()} == ck.HEADER_LIMITS
    assert sizes == ck.ENGINE_HEAD_SIZES


# A header that passes every check but the file's size: each field at a limit keeps it so.
EDGE_BASE = dict(max_seq_len=16, vocab_size=100, num_layers=1, num_heads=1, channels=32,
                 padded_vocab_size=128)
HEADER_FIELDS = list(EDGE_BASE)


def edge_header(field, value):
    f = dict(EDGE_BASE, **{field: value})
    if field == "num_heads":
        f["channels"] = value * 32 if value * 32 <= ck.MAX_CHANNELS else value
    if field == "vocab_size":
        f["padded_vocab_size"] = max(value, f["padded_vocab_size"])
    return [ck.MAGIC, 3] + [f[k] for k in HEADER_FIELDS]


@pytest.mark.parametrize("field", HEADER_FIELDS)
def test_both_readers_take_the_documented_limit_and_refuse_one_more(loadcheck, tmp_path, field):
    limits, _ = documented_limits()
    high = limits[field][1]
    at = bu.raw_header_file(tmp_path / "at.bin", edge_header(field, high))
    over = bu.raw_header_file(tmp_path / "over.bin", edge_header(field, high + 1))
    # at the limit: both readers get past the field checks (and stop at the file's size)
    msg = bu.assert_error_output(lc(loadcheck, "--checkpoint", at, expect=3), 3)
    assert "out of range" not in msg and "bytes" in msg
    with pytest.raises(ck.CheckpointError, match="size mismatch"):
        ck.read_header(at)
    # one more: both refuse the field, naming it and the limit
    msg = bu.assert_error_output(lc(loadcheck, "--checkpoint", over, expect=3), 3, field,
                                 f"1..{high}")
    with pytest.raises(ck.CheckpointError, match=rf"{field} must be in 1\.\.{high}"):
        ck.read_header(over)


@pytest.mark.parametrize("heads, channels", [(1, 16), (2, 32), (1, 32), (12, 768), (5, 640),
                                             (25, 1600), (3, 96)])
def test_both_readers_say_whether_the_engine_runs_the_head_size(loadcheck, tmp_path, heads,
                                                                 channels):
    cfg = ModelConfig.custom(layers=1, heads=heads, channels=channels, max_seq_len=4,
                             vocab_size=100)
    path = ck.make_random_checkpoint(tmp_path / "m.bin", cfg, dtype="bf16")
    rec = lc(loadcheck, "--checkpoint", path).one("checkpoint")
    runs = channels // heads in (32, 64, 128)
    assert rec["runnable"] == str(int(runs))
    assert (cfg.engine_problem() is None) == runs
    info = ck.checkpoint_info(path)
    assert info["ok"] and info["runnable"] == runs
    if not runs:
        assert rec["engine"] == cfg.engine_problem() == info["engine"]
        assert f"head size {channels // heads}" in rec["engine"]
