"""Hugging Face's GPT2LMHeadModel built from one of our llm.c checkpoints (same weights, same
shape, tied lm_head), for the bench's Hugging Face rows. torch and transformers are imported by the
functions that need them."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ...errors import BenchError
from ...files import hfmap
from ...files.checkpoint import ModelConfig, read_checkpoint

EOT_ID = 50256


def hf_unavailable_reason(device: str = "cuda") -> Optional[str]:
    """None when the Hugging Face rows can run on ``device``, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed (pip install transformers)"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return f"CUDA is not available to torch {torch.__version__}"
    return None


def torch_dtype(dtype):
    """A torch dtype from a torch dtype or a name: bf16, fp16, fp32, fp64 (or their long names)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
             "float32": torch.float32, "fp64": torch.float64, "float64": torch.float64}
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}") from None


def hf_config(cfg: ModelConfig, token_id: Optional[int] = None):
    """The transformers GPT2Config of a checkpoint's shape (real vocabulary, GELU tanh, LN eps
    1e-5, no dropout, tied lm_head). ``token_id`` becomes bos/eos/pad (default: start_token)."""
    import transformers

    tok = start_token(cfg) if token_id is None else token_id
    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.channels,
        n_layer=cfg.num_layers, n_head=cfg.num_heads, activation_function="gelu_new",
        layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=True, bos_token_id=tok, eos_token_id=tok, pad_token_id=tok)


def hf_state_dict(cfg: ModelConfig, params: Dict[str, Any]) -> Dict[str, Any]:
    """GPT2LMHeadModel's state dict (float32 CPU tensors) from our parameters: Conv1D weights
    transposed to (in, out), wte without its padding rows, lm_head left to the tie with wte."""
    import numpy as np
    import torch

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    sd = {hfmap.hf_name(n, prefix=hfmap.PREFIX): t(params[n]) for n in hfmap.GLOBAL}
    sd[hfmap.hf_name("wte", prefix=hfmap.PREFIX)] = t(params["wte"][:cfg.vocab_size])
    for i in range(cfg.num_layers):
        for ours in hfmap.LAYER:
            a = params[ours][i]
            sd[hfmap.hf_name(ours, i, hfmap.PREFIX)] = t(a.T if hfmap.is_conv1d(ours) else a)
    return sd


def hf_model_from_checkpoint(path, dtype="bf16", device="cpu",
                             attn_implementation: Optional[str] = None):
    """A transformers GPT2LMHeadModel (eval mode, on ``device``, in ``dtype``) holding the
    weights of our llm.c checkpoint ``path``.

    The checkpoint is read with :func:`gpt2driver.files.checkpoint.read_checkpoint`; bf16 checkpoints
    load exactly into a bf16 model. ``attn_implementation`` (e.g. "eager", "sdpa") defaults to
    transformers' own choice."""
    import torch
    import transformers

    cfg, params, _ = read_checkpoint(path)
    dt = torch_dtype(dtype)
    hcfg = hf_config(cfg)
    if attn_implementation:
        hcfg._attn_implementation = attn_implementation
    with torch.device(device):
        model = transformers.GPT2LMHeadModel(hcfg)
    model = model.to(dtype=dt).eval().requires_grad_(False)
    missing, unexpected = model.load_state_dict(hf_state_dict(cfg, params), strict=False)
    del params
    # Only the tied lm_head and non-persistent buffers may be left to the model.
    left = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias",
                                                                             ".masked_bias"))]
    if unexpected or left:
        raise BenchError(f"{path}: state dict does not fit GPT2LMHeadModel: missing {left}, "
                         f"unexpected {list(unexpected)}")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        model.tie_weights()
        if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
            raise BenchError("lm_head is not tied to wte in this transformers version")
    return model


def start_token(cfg) -> int:
    """The one prompt token: EOT (50256) when the vocabulary holds it, else its last id (as the
    executables choose without a tokenizer). ``cfg``: our ModelConfig or a GPT2Config."""
    vocab = getattr(cfg, "vocab_size")
    return EOT_ID if vocab > EOT_ID else vocab - 1
