"""Tests of gpt2driver.files (checkpoint, convert, models): configs, random init, bf16, file I/O, validation, HF import."""

import json
import math
import os
import struct
import sys

import numpy as np
import pytest

from gpt2driver.files import checkpoint as ck
from gpt2driver.files import convert, models
from gpt2driver.files.checkpoint import CheckpointError, ModelConfig

TINY = ModelConfig.custom(layers=2, heads=2, channels=8, max_seq_len=16, vocab_size=100)


def tiny_params(seed=0):
    return ck.random_params(TINY, seed=seed)


def write_tiny(path, dtype="fp32", seed=0):
    params = tiny_params(seed)
    ck.write_checkpoint(path, TINY, params, dtype=dtype)
    return params


def bf16_round(x):
    """float32 values as they come back from a bf16 file."""
    return ck.bf16_bits_to_f32(ck.f32_to_bf16_bits(x))


def patch_header(path, index, value):
    """Overwrite header int ``index`` of a file in place."""
    with open(path, "r+b") as f:
        f.seek(4 * index)
        f.write(struct.pack("<i", value))


# ------------------------------------------------------------------------------- configs


def test_gpt2_preset_matches_published_shape():
    cfg = ModelConfig.preset("gpt2")
    assert cfg == ModelConfig(1024, 50257, 12, 12, 768, 50304)
    assert cfg.num_parameters == 124_475_904  # llm.c's count for GPT-2 124M with padded wte
    assert cfg.head_size == 64


@pytest.mark.parametrize("name, layers, heads, channels", [
    ("gpt2-medium", 24, 16, 1024), ("gpt2-large", 36, 20, 1280), ("gpt2-xl", 48, 25, 1600)])
def test_larger_presets(name, layers, heads, channels):
    cfg = ModelConfig.preset(name)
    assert (cfg.num_layers, cfg.num_heads, cfg.channels) == (layers, heads, channels)
    assert (cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size) == (1024, 50257, 50304)
    assert cfg.head_size == 64


def test_unknown_preset_lists_names():
    with pytest.raises(CheckpointError, match="gpt2-medium") as exc:
        ModelConfig.preset("gpt3")
    assert "gpt3" in str(exc.value) and "gpt2-xl" in str(exc.value)


@pytest.mark.parametrize("vocab, padded", [(1, 128), (100, 128), (128, 128), (129, 256),
                                           (50257, 50304)])
def test_custom_pads_vocab_to_128(vocab, padded):
    cfg = ModelConfig.custom(1, 1, 4, max_seq_len=8, vocab_size=vocab)
    assert cfg.padded_vocab_size == padded and cfg.vocab_size == vocab


@pytest.mark.parametrize("fields, message", [
    (dict(channels=10, num_heads=3), "multiple of num_heads"),
    (dict(num_layers=0), "num_layers"),
    (dict(channels=-8), "channels"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(padded_vocab_size=99), "padded_vocab_size"),
    (dict(max_seq_len=(1 << 20) + 1), "max_seq_len"),
    (dict(num_heads=2.0), "integer"),
])
def test_config_validation(fields, message):
    base = TINY.as_dict()
    base.update(fields)
    with pytest.raises(CheckpointError, match=message):
        ModelConfig(**base)


def test_param_shapes_order_and_count():
    shapes = ck.param_shapes(TINY)
    assert [n for n, _ in shapes] == [
        "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
        "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
    d = dict(shapes)
    assert d["wte"] == (128, 8) and d["wpe"] == (16, 8)
    assert d["qkvw"] == (2, 24, 8) and d["fcw"] == (2, 32, 8) and d["fcprojw"] == (2, 8, 32)
    L, C = 2, 8
    expected = 128 * C + 16 * C + L * (12 * C * C + 13 * C) + 2 * C
    assert TINY.num_parameters == expected == sum(math.prod(s) for _, s in shapes)


# ------------------------------------------------------------------------------- random init


def test_random_params_shapes_determinism_and_padding():
    a, b, c = tiny_params(0), tiny_params(0), tiny_params(1)
    for name, shape in ck.param_shapes(TINY):
        assert a[name].shape == shape and a[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name]), name
        assert np.count_nonzero(a[name]) > 0, name
    assert not a["wte"][TINY.vocab_size:].any()
    assert np.all(np.abs(a["wte"][:TINY.vocab_size]).sum(axis=1) > 0)


def test_random_params_statistics():
    cfg = ModelConfig.custom(layers=2, heads=4, channels=128, max_seq_len=64, vocab_size=500)
    p = ck.random_params(cfg, seed=3)
    residual = 0.02 / math.sqrt(2 * cfg.num_layers)
    for name, std in [("qkvw", 0.02), ("fcw", 0.02), ("wpe", 0.02), ("attprojw", residual),
                      ("fcprojw", residual), ("fcb", 0.02), ("ln1b", 0.02)]:
        n = p[name].size  # tolerances: 5 standard errors of the sample mean / std
        assert abs(p[name].mean()) < 5 * std / math.sqrt(n), name
        assert p[name].std() == pytest.approx(std, rel=5 / math.sqrt(2 * n)), name
    for name in ("ln1w", "ln2w", "lnfw"):
        assert p[name].mean() == pytest.approx(1.0, abs=0.03), name
        assert p[name].std() == pytest.approx(0.1, rel=0.25), name
    assert p["wte"][:cfg.vocab_size].std() == pytest.approx(0.02, rel=0.05)


# ------------------------------------------------------------------------------- bf16


def _f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _bf16_value(bits16):
    """float value of a bf16 pattern; the overflow pattern counts as 2**128 for distances."""
    if bits16 & 0x7FFF == 0x7F80:
        return math.copysign(2.0 ** 128, -1.0 if bits16 & 0x8000 else 1.0)
    return struct.unpack("<f", struct.pack("<I", bits16 << 16))[0]


def reference_bf16(x):
    """Round one float32 to bf16 by comparing distances to the two neighbours (ties to even)."""
    bits = _f32_bits(x)
    if math.isinf(x):
        return bits >> 16
    lo = bits >> 16            # truncation: the neighbour towards zero
    hi = lo + 1                # the neighbour away from zero
    d_lo, d_hi = abs(x - _bf16_value(lo)), abs(_bf16_value(hi) - x)
    if d_lo != d_hi:
        return lo if d_lo < d_hi else hi
    return lo if lo % 2 == 0 else hi


def test_bf16_rounding_matches_independent_reference():
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.standard_normal(2000).astype(np.float32)
        * np.float32(10.0) ** rng.integers(-30, 30, 2000).astype(np.float32),
        rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([0.0, -0.0, 1.0, -1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20,
                  3.3895314e38, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45, 1.1754942e-38,
                  np.inf, -np.inf], dtype=np.float32),
    ])
    values = values[~np.isnan(values)]
    got = ck.f32_to_bf16_bits(values)
    assert got.dtype == np.uint16
    expected = np.array([reference_bf16(float(v)) for v in values], dtype=np.uint16)
    np.testing.assert_array_equal(got, expected)


def test_bf16_specific_cases():
    assert ck.f32_to_bf16_bits(np.float32(1.0)) == 0x3F80
    assert ck.f32_to_bf16_bits(np.float32(1 + 2**-8)) == 0x3F80           # tie -> even (down)
    assert ck.f32_to_bf16_bits(np.float32(1 + 3 * 2**-8)) == 0x3F82       # tie -> even (up)
    assert ck.f32_to_bf16_bits(np.float32(3.4028235e38)) == 0x7F80        # overflow -> inf
    assert ck.f32_to_bf16_bits(np.float32(-np.inf)) == 0xFF80
    assert ck.f32_to_bf16_bits(np.zeros((2, 3), np.float32)).shape == (2, 3)


def test_bf16_nan_stays_nan():
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF],
                    dtype=np.uint32).view(np.float32)
    out = ck.bf16_bits_to_f32(ck.f32_to_bf16_bits(nans))
    assert np.isnan(out).all()
    assert np.signbit(out).tolist() == [False, True, False, False, True]


def test_bf16_widening_is_exact():
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0000, 0x8000, 0x3E4C], dtype=np.uint16)
    out = ck.bf16_bits_to_f32(bits)
    assert out.dtype == np.float32
    assert out[:5].tolist() == [1.0, -2.0, np.inf, 0.0, -0.0]
    assert out[5] == np.float32(0.19921875)
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = ~np.isnan(ck.bf16_bits_to_f32(every))
    np.testing.assert_array_equal(ck.f32_to_bf16_bits(ck.bf16_bits_to_f32(every))[finite],
                                  every[finite])


# ------------------------------------------------------------------------------- round trips


def test_fp32_round_trip_is_exact(tmp_path):
    path = tmp_path / "m.bin"
    params = write_tiny(path, "fp32")
    assert path.stat().st_size == 1024 + 4 * TINY.num_parameters
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[:8].tolist() == [20240326, 3, 16, 100, 2, 2, 8, 128]
    assert not header[8:].any()
    cfg, back, dtype = ck.read_checkpoint(path)
    assert (cfg, dtype) == (TINY, "fp32")
    assert list(back) == [n for n, _ in ck.param_shapes(TINY)]
    for name in params:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], params[name])
    # Tensors are concatenated in file order: check one offset directly.
    raw = np.fromfile(path, dtype="<f4", offset=1024)
    np.testing.assert_array_equal(raw[:128 * 8], params["wte"].ravel())
    np.testing.assert_array_equal(raw[-8:], params["lnfb"])


def test_bf16_round_trip(tmp_path):
    path = tmp_path / "m.bin"
    params = write_tiny(path, "bf16")
    assert path.stat().st_size == 1024 + 2 * TINY.num_parameters
    assert ck.read_header(path) == (TINY, 5)
    cfg, back, dtype = ck.read_checkpoint(path)
    assert (cfg, dtype) == (TINY, "bf16")
    raw = np.fromfile(path, dtype="<u2", offset=1024)
    flat = np.concatenate([params[n].ravel() for n, _ in ck.param_shapes(TINY)])
    expected_bits = np.array([reference_bf16(float(v)) for v in flat], dtype=np.uint16)
    np.testing.assert_array_equal(raw, expected_bits)
    for name, x in params.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_less(np.abs(back[name] - x), np.abs(x) * 2**-8 + 1e-45)
        assert not np.array_equal(back[name], x) or name == "wte"  # rounding really happened


def test_dtype_aliases_and_unknown_dtype(tmp_path):
    write_tiny(tmp_path / "a.bin", "bfloat16")
    assert ck.read_header(tmp_path / "a.bin")[1] == 5
    with pytest.raises(CheckpointError, match="fp16"):
        write_tiny(tmp_path / "b.bin", "fp16")
    assert not (tmp_path / "b.bin").exists()


def test_make_random_checkpoint_matches_random_params(tmp_path):
    path = ck.make_random_checkpoint(tmp_path / "r.bin", TINY, dtype="fp32", seed=5)
    _, back, _ = ck.read_checkpoint(path)
    for name, x in ck.random_params(TINY, seed=5).items():
        np.testing.assert_array_equal(back[name], x)
    ck.make_random_checkpoint(tmp_path / "r16.bin", TINY, seed=5)
    assert ck.read_checkpoint(tmp_path / "r16.bin")[2] == "bf16"


def test_write_overwrites_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.bin"
    write_tiny(path, seed=0)
    write_tiny(path, seed=1)
    np.testing.assert_array_equal(ck.read_checkpoint(path)[1]["qkvw"], tiny_params(1)["qkvw"])
    assert os.listdir(tmp_path) == ["m.bin"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.pop("fcb"), "missing \\['fcb'\\]"),
    (lambda p: p.update(extra=np.zeros(3)), "unexpected \\['extra'\\]"),
    (lambda p: p.update(qkvw=np.zeros((2, 8, 24), np.float32)), "qkvw: expected shape"),
])
def test_write_validates_params_and_keeps_old_file(tmp_path, mutate, message):
    path = tmp_path / "m.bin"
    write_tiny(path)
    before = path.read_bytes()
    params = tiny_params(9)
    mutate(params)
    with pytest.raises(CheckpointError, match=message):
        ck.write_checkpoint(path, TINY, params)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.bin"]


# ------------------------------------------------------------------------------- read errors


def assert_bad(path, *fragments):
    """read_header, read_checkpoint and checkpoint_info all reject ``path`` the same way."""
    for reader in (ck.read_header, ck.read_checkpoint):
        with pytest.raises(CheckpointError) as exc:
            reader(path)
        msg = str(exc.value)
        assert str(path) in msg and "\n" not in msg
        for fragment in fragments:
            assert fragment in msg, (fragment, msg)
    info = ck.checkpoint_info(path)
    assert info["ok"] is False and fragments[0] in info["error"]
    return info


def test_missing_file(tmp_path):
    assert_bad(tmp_path / "nope.bin", "not found")


def test_directory_is_rejected(tmp_path):
    assert_bad(tmp_path, "not a regular file")


@pytest.mark.parametrize("size", [0, 4, 1023])
def test_short_file(tmp_path, size):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x00" * size)
    assert_bad(path, "too short", "1024", str(size))


def test_wrong_magic(tmp_path):
    path = tmp_path / "m.bin"
    write_tiny(path)
    patch_header(path, 0, 20240328)  # a tokenizer's magic
    assert_bad(path, "bad magic", "20240326", "20240328")


@pytest.mark.parametrize("version", [1, 4, 6, -3])
def test_wrong_version(tmp_path, version):
    path = tmp_path / "m.bin"
    write_tiny(path)
    patch_header(path, 1, version)
    assert_bad(path, "unsupported version", f"found {version}")


def test_version_swap_is_a_size_mismatch(tmp_path):
    path = tmp_path / "m.bin"
    write_tiny(path, "fp32")
    patch_header(path, 1, 5)
    info = assert_bad(path, "size mismatch", str(1024 + 2 * TINY.num_parameters),
                      str(1024 + 4 * TINY.num_parameters))
    assert info["dtype"] == "bf16" and info["num_parameters"] == TINY.num_parameters


@pytest.mark.parametrize("extra", [-1, -4, 1, 2, 4096])
def test_truncated_or_trailing_bytes(tmp_path, extra):
    path = tmp_path / "m.bin"
    write_tiny(path, "bf16")
    data = path.read_bytes()
    path.write_bytes(data[:extra] if extra < 0 else data + b"\x01" * extra)
    expected = 1024 + 2 * TINY.num_parameters
    info = assert_bad(path, "size mismatch", f"implies {expected}", f"found {expected + extra}")
    assert info["expected_bytes"] == expected and info["file_bytes"] == expected + extra


@pytest.mark.parametrize("index, value, message", [
    (2, 0, "max_seq_len"), (2, 1 << 21, "max_seq_len"), (3, -5, "vocab_size"),
    (4, 0, "num_layers"), (5, 0, "num_heads"), (5, 3, "multiple of num_heads"),
    (6, 0, "channels"), (7, 99, "padded_vocab_size"), (7, -1, "padded_vocab_size"),
    (6, 2**31 - 1, "channels"),
])
def test_bad_header_fields(tmp_path, index, value, message):
    path = tmp_path / "m.bin"
    write_tiny(path)
    patch_header(path, index, value)
    assert_bad(path, "bad header", message)


def test_checkpoint_info_ok(tmp_path):
    path = tmp_path / "m.bin"
    write_tiny(path, "bf16")
    info = ck.checkpoint_info(path)
    assert info["ok"] is True and info["error"] is None
    assert info["magic"] == 20240326 and info["version"] == 5 and info["dtype"] == "bf16"
    assert {k: info[k] for k in TINY.as_dict()} == TINY.as_dict()
    assert info["num_parameters"] == TINY.num_parameters
    assert info["file_bytes"] == info["expected_bytes"] == 1024 + 2 * TINY.num_parameters


# ------------------------------------------------------------------------------- HF import


HF = dict(n_layer=2, n_head=2, n_embd=8, n_positions=16, vocab_size=50)


def make_hf_model(directory, prefix="", with_config=True, dtype=np.float32):
    """Write a tiny fake Hugging Face GPT-2 (Conv1D weights stored (in, out)); return tensors."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    rng = np.random.default_rng(11)
    C, L = HF["n_embd"], HF["n_layer"]
    shapes = {"wte.weight": (HF["vocab_size"], C), "wpe.weight": (HF["n_positions"], C),
              "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(L):
        shapes.update({
            f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,),
            f"h.{i}.attn.c_attn.weight": (C, 3 * C), f"h.{i}.attn.c_attn.bias": (3 * C,),
            f"h.{i}.attn.c_proj.weight": (C, C), f"h.{i}.attn.c_proj.bias": (C,),
            f"h.{i}.ln_2.weight": (C,), f"h.{i}.ln_2.bias": (C,),
            f"h.{i}.mlp.c_fc.weight": (C, 4 * C), f"h.{i}.mlp.c_fc.bias": (4 * C,),
            f"h.{i}.mlp.c_proj.weight": (4 * C, C), f"h.{i}.mlp.c_proj.bias": (C,),
            f"h.{i}.attn.bias": (1, 1, 16, 16),  # the causal-mask buffer of old checkpoints
        })
    tensors = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    stored = {prefix + k: v for k, v in tensors.items()}
    stored["lm_head.weight"] = tensors["wte.weight"]
    directory.mkdir(parents=True, exist_ok=True)
    save_file(stored, str(directory / "model.safetensors"))
    if with_config:
        (directory / "config.json").write_text(json.dumps({**HF, "model_type": "gpt2"}))
    return {k: v.astype(np.float32) for k, v in tensors.items()}


def check_converted(path, hf, max_seq_len=16):
    cfg, p, _ = ck.read_checkpoint(path)
    assert cfg == ModelConfig.custom(2, 2, 8, max_seq_len=max_seq_len, vocab_size=50)
    assert p["wte"].shape == (128, 8)
    np.testing.assert_array_equal(p["wte"][:50], hf["wte.weight"])
    assert not p["wte"][50:].any()
    np.testing.assert_array_equal(p["wpe"], hf["wpe.weight"][:max_seq_len])
    np.testing.assert_array_equal(p["lnfw"], hf["ln_f.weight"])
    for i in range(2):
        np.testing.assert_array_equal(p["qkvw"][i], hf[f"h.{i}.attn.c_attn.weight"].T)
        np.testing.assert_array_equal(p["attprojw"][i], hf[f"h.{i}.attn.c_proj.weight"].T)
        np.testing.assert_array_equal(p["fcw"][i], hf[f"h.{i}.mlp.c_fc.weight"].T)
        np.testing.assert_array_equal(p["fcprojw"][i], hf[f"h.{i}.mlp.c_proj.weight"].T)
        np.testing.assert_array_equal(p["qkvb"][i], hf[f"h.{i}.attn.c_attn.bias"])
        np.testing.assert_array_equal(p["ln2w"][i], hf[f"h.{i}.ln_2.weight"])
        np.testing.assert_array_equal(p["fcprojb"][i], hf[f"h.{i}.mlp.c_proj.bias"])
    # The (out, in) layout computes the same linear map as HF's x @ W.
    x = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    np.testing.assert_allclose(p["fcw"][1] @ x, x @ hf["h.1.mlp.c_fc.weight"], rtol=1e-5)
    return cfg


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_convert_hf_directory(tmp_path, prefix):
    hf = make_hf_model(tmp_path / "hf", prefix=prefix)
    cfg = convert.convert_hf(tmp_path / "hf", tmp_path / "out.bin")
    assert cfg.num_heads == 2
    check_converted(tmp_path / "out.bin", hf)


def test_convert_hf_bf16_and_max_seq_len(tmp_path):
    hf = make_hf_model(tmp_path / "hf", dtype=np.float16)
    convert.convert_hf(tmp_path / "hf", tmp_path / "out.bin", dtype="bf16", max_seq_len=8)
    cfg, p, dtype = ck.read_checkpoint(tmp_path / "out.bin")
    assert dtype == "bf16" and cfg.max_seq_len == 8
    np.testing.assert_array_equal(p["wpe"], bf16_round(hf["wpe.weight"][:8]))
    with pytest.raises(CheckpointError, match="max_seq_len must be in 1..16"):
        convert.convert_hf(tmp_path / "hf", tmp_path / "bad.bin", max_seq_len=17)


def test_convert_hf_file_without_config_infers_shape(tmp_path):
    hf = make_hf_model(tmp_path / "hf", with_config=False)
    src = tmp_path / "hf" / "model.safetensors"
    cfg = convert.convert_hf(src, tmp_path / "a.bin")
    assert cfg.num_heads == 1  # channels // 64, at least 1
    cfg = convert.convert_hf(src, tmp_path / "b.bin", num_heads=2)
    check_converted(tmp_path / "b.bin", hf)


def test_convert_hf_errors(tmp_path):
    make_hf_model(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="not found"):
        convert.convert_hf(tmp_path / "missing", tmp_path / "out.bin")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**HF, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="'h.2.ln_1.weight' not found"):
        convert.convert_hf(tmp_path / "hf", tmp_path / "out.bin")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**HF, "n_embd": 16}))
    with pytest.raises(CheckpointError, match="expected shape"):
        convert.convert_hf(tmp_path / "hf", tmp_path / "out.bin")
    (tmp_path / "hf" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        convert.convert_hf(tmp_path / "hf", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_convert_hf_without_safetensors_names_the_package(tmp_path, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(CheckpointError, match="pip install safetensors"):
        convert.convert_hf(tmp_path, tmp_path / "out.bin")


# ------------------------------------------------------------------------------- default model


def test_default_model_path_uses_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2DRIVER_HOME", str(tmp_path))
    assert models.default_model_path("BF16") == tmp_path / "models" / "gpt2_124M_random_bf16.bin"
    assert models.default_model_path("FP16") == tmp_path / "models" / "gpt2_124M_random_bf16.bin"
    assert models.default_model_path("fp32") == tmp_path / "models" / "gpt2_124M_random_fp32.bin"
    with pytest.raises(CheckpointError, match="unknown precision"):
        models.default_model_path("int8")


def test_default_home_is_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2DRIVER_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.default_model_path("FP32") == (
        tmp_path / ".cache" / "gpt2driver" / "models" / "gpt2_124M_random_fp32.bin")


def test_ensure_default_model_creates_once_and_repairs(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2DRIVER_HOME", str(tmp_path))
    monkeypatch.setattr(models, "DEFAULT_MODEL_CONFIG", TINY)  # never write 124M in unit tests
    path = models.ensure_default_model("BF16")
    assert path == models.default_model_path("BF16") and ck.read_header(path) == (TINY, 5)
    _, params, _ = ck.read_checkpoint(path)
    expected = ck.random_params(TINY, seed=0)["qkvw"]
    np.testing.assert_array_equal(params["qkvw"], bf16_round(expected))
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    assert models.ensure_default_model("FP16") == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # not rewritten
    path.write_bytes(path.read_bytes()[:-2])                            # corrupt it
    assert ck.read_header(models.ensure_default_model("BF16")) == (TINY, 5)
    fp32 = models.ensure_default_model("FP32")
    assert fp32.name == "gpt2_124M_random_fp32.bin" and ck.read_header(fp32) == (TINY, 3)
