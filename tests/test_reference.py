"""The PyTorch reference (tests/reference.py) checked on the CPU: against Hugging Face's GPT-2 when
transformers is installed, against a hand-written single-token forward, and for causality."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference as ref  # noqa: E402
from gpt2driver.files import checkpoint as ck  # noqa: E402
from gpt2driver.files.checkpoint import ModelConfig  # noqa: E402

CFG = ModelConfig.custom(layers=2, heads=4, channels=32, max_seq_len=16, vocab_size=100)


def strong_params(cfg=CFG, seed=0):
    """Random parameters large enough that attention is far from uniform and GELU far from
    linear, so a wrong head split or activation shows in the logits."""
    rng = np.random.default_rng(seed)
    p = {}
    for name, shape in ck.param_shapes(cfg):
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.3 * rng.standard_normal(shape)
        elif name.endswith("b"):
            a = 0.2 * rng.standard_normal(shape)
        elif name in ("wte", "wpe"):
            a = 1.0 * rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / math.sqrt(shape[-1]) * 2.0
        p[name] = a.astype(np.float32)
    p["wte"][cfg.vocab_size:] = 0.0
    return p


@pytest.fixture(scope="module")
def params():
    return strong_params()


def tokens(B, T, seed=1, V=CFG.vocab_size):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, V, size=(B, T)))


def test_shape_dtype_and_positions(params):
    tok = tokens(3, 16)
    out = ref.reference_logits(params, CFG, tok, device="cpu")
    assert out.shape == (3, 16, CFG.vocab_size) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
    sub = ref.reference_logits(params, CFG, tok, positions=[0, 5, 15], device="cpu")
    assert torch.allclose(sub, out[:, [0, 5, 15]], rtol=0, atol=1e-12)
    # prepared tensors give the same result as numpy arrays
    again = ref.reference_logits(ref.to_torch(params, "cpu"), CFG, tok.numpy())
    assert torch.equal(again, out)


def _np_layernorm(x, w, b):
    m = x.mean()
    v = ((x - m) ** 2).mean()
    return (x - m) / np.sqrt(v + 1e-5) * w + b


def test_single_token_by_hand(params):
    """With one token, attention returns its own value vector: the forward is plain algebra."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    C, V = CFG.channels, CFG.vocab_size
    t = 42
    x = p["wte"][t] + p["wpe"][0]
    for l in range(CFG.num_layers):
        h = _np_layernorm(x, p["ln1w"][l], p["ln1b"][l])
        v = (p["qkvw"][l] @ h + p["qkvb"][l])[2 * C:]
        x = x + p["attprojw"][l] @ v + p["attprojb"][l]
        h = _np_layernorm(x, p["ln2w"][l], p["ln2b"][l])
        u = p["fcw"][l] @ h + p["fcb"][l]
        g = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
        x = x + p["fcprojw"][l] @ g + p["fcprojb"][l]
    want = p["wte"][:V] @ _np_layernorm(x, p["lnfw"], p["lnfb"])
    got = ref.reference_logits(params, CFG, torch.tensor([[t]]), device="cpu")[0, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_causality(params):
    tok = tokens(2, 16, seed=5)
    base = ref.reference_logits(params, CFG, tok, device="cpu")
    for k in (15, 9, 3):
        changed = tok.clone()
        changed[:, k] = (changed[:, k] + 17) % CFG.vocab_size
        out = ref.reference_logits(params, CFG, changed, device="cpu")
        assert torch.equal(out[:, :k], base[:, :k]), f"position {k} leaked into earlier logits"
        assert (out[:, k:] - base[:, k:]).abs().amax(dim=-1).min() > 1e-6, "later logits must change"


def test_rows_are_independent_and_prefix_consistent(params):
    tok = tokens(3, 16, seed=7)
    full = ref.reference_logits(params, CFG, tok, device="cpu")
    one = ref.reference_logits(params, CFG, tok[1:2], device="cpu")
    torch.testing.assert_close(one[0], full[1], rtol=0, atol=1e-12)
    prefix = ref.reference_logits(params, CFG, tok[:, :9], device="cpu")
    torch.testing.assert_close(prefix, full[:, :9], rtol=0, atol=1e-12)


def test_padding_rows_are_ignored(params):
    tok = tokens(1, 8)
    base = ref.reference_logits(params, CFG, tok, device="cpu")
    noisy = {k: v.copy() for k, v in params.items()}
    noisy["wte"][CFG.vocab_size:] = 123.0
    assert torch.equal(ref.reference_logits(noisy, CFG, tok, device="cpu"), base)


def test_rejects_bad_tokens(params):
    with pytest.raises(ValueError):
        ref.reference_logits(params, CFG, torch.tensor([[CFG.vocab_size]]), device="cpu")
    with pytest.raises(ValueError):
        ref.reference_logits(params, CFG, torch.zeros(1, CFG.max_seq_len + 1, dtype=torch.long),
                             device="cpu")


def test_round_weights(params):
    assert ref.round_weights(params, "FP32")["qkvw"].tobytes() == params["qkvw"].tobytes()
    b = ref.round_weights(params, "BF16")["fcw"]
    assert b.dtype == np.float32 and not np.array_equal(b, params["fcw"])
    assert np.all(b.view(np.uint32) & 0xFFFF == 0)  # representable in bf16
    np.testing.assert_array_equal(b, ck.bf16_bits_to_f32(ck.f32_to_bf16_bits(params["fcw"])))
    h = ref.round_weights(params, "fp16")["fcw"]
    np.testing.assert_array_equal(h, params["fcw"].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError):
        ref.round_weights(params, "FP8")


def test_checkpoint_round_trip(tmp_path, params):
    path = ck.write_checkpoint(tmp_path / "m.bin", CFG, params, dtype="bf16")
    cfg, model = ref.load_reference(path, "BF16", device="cpu")
    assert cfg == CFG
    tok = tokens(2, 10)
    from_file = ref.reference_logits(model, cfg, tok)
    from_params = ref.reference_logits(ref.round_weights(params, "BF16"), CFG, tok, device="cpu")
    assert torch.equal(from_file, from_params)


# ------------------------------------------------------------------------------------------------
# Hugging Face
# ------------------------------------------------------------------------------------------------


def hf_model(cfg, params):
    transformers = pytest.importorskip("transformers")
    hcfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.channels,
        n_layer=cfg.num_layers, n_head=cfg.num_heads, activation_function="gelu_new",
        layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=True)
    try:
        model = transformers.GPT2LMHeadModel(hcfg, attn_implementation="eager")
    except TypeError:  # older transformers take it on the config only
        hcfg._attn_implementation = "eager"
        model = transformers.GPT2LMHeadModel(hcfg)
    model = model.double().eval()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).double()  # noqa: E731
    sd = {"transformer.wte.weight": t(params["wte"][:cfg.vocab_size]),
          "transformer.wpe.weight": t(params["wpe"]),
          "transformer.ln_f.weight": t(params["lnfw"]), "transformer.ln_f.bias": t(params["lnfb"])}
    for i in range(cfg.num_layers):
        pre = f"transformer.h.{i}."
        sd.update({
            pre + "ln_1.weight": t(params["ln1w"][i]), pre + "ln_1.bias": t(params["ln1b"][i]),
            # HF's Conv1D keeps (in, out); ours are (out, in).
            pre + "attn.c_attn.weight": t(params["qkvw"][i].T), pre + "attn.c_attn.bias": t(params["qkvb"][i]),
            pre + "attn.c_proj.weight": t(params["attprojw"][i].T),
            pre + "attn.c_proj.bias": t(params["attprojb"][i]),
            pre + "ln_2.weight": t(params["ln2w"][i]), pre + "ln_2.bias": t(params["ln2b"][i]),
            pre + "mlp.c_fc.weight": t(params["fcw"][i].T), pre + "mlp.c_fc.bias": t(params["fcb"][i]),
            pre + "mlp.c_proj.weight": t(params["fcprojw"][i].T),
            pre + "mlp.c_proj.bias": t(params["fcprojb"][i]),
        })
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    # Only the tied lm_head and non-persistent buffers (causal mask) may be left out.
    assert all(k == "lm_head.weight" or "attn.bias" in k or "masked_bias" in k for k in missing), missing
    assert torch.equal(model.lm_head.weight, sd["transformer.wte.weight"])
    return model


@pytest.mark.parametrize("B, T", [(1, 1), (3, 16), (2, 7)])
def test_matches_huggingface(params, B, T):
    model = hf_model(CFG, params)
    tok = tokens(B, T, seed=B * 100 + T)
    with torch.no_grad():
        want = model(input_ids=tok).logits
    got = ref.reference_logits(params, CFG, tok, device="cpu")
    assert want.shape == got.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_matches_huggingface_gpt2_random_init():
    """GPT-2-like random init (what the GPU tests use), other head count, bf16-rounded weights."""
    cfg = ModelConfig.custom(layers=3, heads=2, channels=48, max_seq_len=32, vocab_size=300)
    params = ref.round_weights(ck.random_params(cfg, seed=11), "BF16")
    model = hf_model(cfg, params)
    tok = tokens(2, 32, seed=3, V=cfg.vocab_size)
    with torch.no_grad():
        want = model(input_ids=tok).logits
    torch.testing.assert_close(ref.reference_logits(params, cfg, tok, device="cpu"), want,
                               rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Logits dump reader
# ------------------------------------------------------------------------------------------------


def write_dump(path, B, V, P, stride, steps, magic=20241121, version=1, extra=b""):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((len(steps), B, V)).astype(np.float32)
    h = np.zeros(16, dtype="<i4")
    h[:8] = [magic, version, B, V, len(steps), P, stride, 0]
    with open(path, "wb") as f:
        f.write(h.tobytes())
        for i, s in enumerate(steps):
            f.write(np.array([s, P - 1 + s], dtype="<i4").tobytes())
            f.write(logits[i].astype("<f4").tobytes())
        f.write(extra)
    return logits


def test_read_logits_dump(tmp_path):
    steps = [0, 3, 6, 7]
    want = write_dump(tmp_path / "d.bin", B=3, V=11, P=5, stride=3, steps=steps)
    header, got_steps, pos, logits = ref.read_logits_dump(tmp_path / "d.bin")
    assert header == {"magic": 20241121, "version": 1, "B": 3, "V": 11, "records": 4,
                      "prompt_len": 5, "stride": 3, "dtype": 0}
    assert got_steps == steps and pos == [4 + s for s in steps]
    assert logits.shape == (4, 3, 11) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits, want)


@pytest.mark.parametrize("kw", [{"magic": 1}, {"version": 2}, {"extra": b"\0\0\0\0"}])
def test_read_logits_dump_rejects_bad_files(tmp_path, kw):
    write_dump(tmp_path / "d.bin", B=2, V=5, P=1, stride=1, steps=[0, 1], **kw)
    with pytest.raises(ValueError):
        ref.read_logits_dump(tmp_path / "d.bin")
    (tmp_path / "short.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError):
        ref.read_logits_dump(tmp_path / "short.bin")
