"""An independent GPT-2 forward pass in PyTorch (float64), the yardstick for the engine's logits.

It reads our llm.c checkpoints through gpt2driver.files.checkpoint.read_checkpoint and shares no code with
the engine. Linear weights are stored (out, in) as in llm.c, so ``y = x @ W.T + b``. The QKV
projection's output holds q, k, v one after the other, each of ``C`` channels, heads contiguous
inside each.

    cfg, params, _ = read_checkpoint(path)
    params = round_weights(params, "BF16")          # what a BF16 build computes with
    model = to_torch(params)                         # float64, on the GPU when there is one
    logits = reference_logits(model, cfg, tokens)    # [B, T, V] float64

``read_logits_dump`` reads the engine's ``--dump-logits`` file (docs/protocol.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from gpt2driver.files import checkpoint as ck

DUMP_MAGIC = 20241121
DUMP_VERSION = 1
DUMP_HEADER_INTS = 16
LN_EPS = 1e-5

Params = Mapping[str, Union[np.ndarray, torch.Tensor]]


# ------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------


def round_weights(params: Mapping[str, np.ndarray], precision: str) -> Dict[str, np.ndarray]:
    """The float32 parameters as a build of ``precision`` holds them on the GPU.

    FP32: unchanged. BF16: rounded to bfloat16 (nearest, ties to even). FP16: rounded to IEEE
    half (nearest even, overflow to inf). The results are float32 arrays holding those values.
    """
    p = str(precision).upper()
    if p in ("FP32", "F32", "FLOAT32"):
        return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    if p in ("BF16", "BFLOAT16"):
        return {k: ck.bf16_bits_to_f32(ck.f32_to_bf16_bits(v)) for k, v in params.items()}
    if p in ("FP16", "F16", "FLOAT16", "HALF"):
        with np.errstate(over="ignore"):
            return {k: np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)
                    for k, v in params.items()}
    raise ValueError(f"unknown precision {precision!r}: expected FP32, BF16 or FP16")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_torch(params: Params, device: Optional[Union[str, torch.device]] = None,
             dtype: torch.dtype = torch.float64) -> Dict[str, torch.Tensor]:
    """The parameters as float64 tensors on ``device`` (default: CUDA when available)."""
    dev = torch.device(device) if device is not None else default_device()
    out = {}
    for k, v in params.items():
        t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.to(device=dev, dtype=dtype)
    return out


def load_reference(path, precision: str = "FP32", device=None):
    """(cfg, float64 tensors) of a checkpoint, rounded like a build of ``precision``."""
    cfg, params, _ = ck.read_checkpoint(path)
    return cfg, to_torch(round_weights(params, precision), device)


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------


def _layernorm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as in GPT-2
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _attention(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, n_head: int) -> torch.Tensor:
    """Causal multi-head self-attention of x [B, T, C]; w [3C, C], b [3C]; returns [B, T, C]."""
    B, T, C = x.shape
    hs = C // n_head
    qkv = x @ w.T + b
    q, k, v = qkv.split(C, dim=-1)
    q, k, v = (t.reshape(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))  # [B, NH, T, hs]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v).transpose(1, 2).reshape(B, T, C)


@torch.no_grad()
def reference_logits(params: Params, cfg: ck.ModelConfig, tokens,
                     positions: Optional[Sequence[int]] = None,
                     device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """Logits of a GPT-2 forward over ``tokens`` [B, T] (LongTensor or array), in float64.

    ``params``: numpy float32 arrays (converted here) or tensors from :func:`to_torch` (used on
    their own device). Returns [B, T, V] (the real vocabulary, padding rows of wte dropped), or
    [B, len(positions), V] with only those positions when ``positions`` is given.
    """
    if not all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in params.values()):
        params = to_torch(params, device)
    p = params
    dev = p["wte"].device
    tok = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    tok = tok.to(device=dev, dtype=torch.long)
    if tok.dim() == 1:
        tok = tok[None]
    B, T = tok.shape
    V, L = cfg.vocab_size, cfg.num_layers
    if T > cfg.max_seq_len:
        raise ValueError(f"{T} tokens exceed max_seq_len {cfg.max_seq_len}")
    if tok.numel() and (int(tok.min()) < 0 or int(tok.max()) >= V):
        raise ValueError(f"token ids must be in 0..{V - 1}")

    x = p["wte"][tok] + p["wpe"][:T][None]
    for l in range(L):
        h = _layernorm(x, p["ln1w"][l], p["ln1b"][l])
        a = _attention(h, p["qkvw"][l], p["qkvb"][l], cfg.num_heads)
        x = x + a @ p["attprojw"][l].T + p["attprojb"][l]
        h = _layernorm(x, p["ln2w"][l], p["ln2b"][l])
        h = _gelu_tanh(h @ p["fcw"][l].T + p["fcb"][l])
        x = x + h @ p["fcprojw"][l].T + p["fcprojb"][l]
    if positions is not None:
        x = x[:, torch.as_tensor(list(positions), dtype=torch.long, device=dev)]
    x = _layernorm(x, p["lnfw"], p["lnfb"])
    return x @ p["wte"][:V].T


# ------------------------------------------------------------------------------------------------
# The engine's logits dump
# ------------------------------------------------------------------------------------------------


def read_logits_dump(path) -> Tuple[Dict[str, int], List[int], List[int], np.ndarray]:
    """Read a ``--dump-logits`` file: (header, steps, positions, logits [records, B, V] float32).

    Header keys: magic, version, B, V, records, prompt_len, stride, dtype. Raises ValueError when
    the file does not follow docs/protocol.md (magic, version, dtype, size).
    """
    path = Path(path)
    size = path.stat().st_size
    if size < DUMP_HEADER_INTS * 4:
        raise ValueError(f"{path}: {size} bytes, shorter than the 64-byte header")
    h = np.fromfile(path, dtype="<i4", count=DUMP_HEADER_INTS)
    header = dict(zip(("magic", "version", "B", "V", "records", "prompt_len", "stride", "dtype"),
                      (int(v) for v in h[:8])))
    if header["magic"] != DUMP_MAGIC:
        raise ValueError(f"{path}: bad magic {header['magic']} (expected {DUMP_MAGIC})")
    if header["version"] != DUMP_VERSION:
        raise ValueError(f"{path}: unsupported dump version {header['version']}")
    if header["dtype"] != 0:
        raise ValueError(f"{path}: unsupported logits type {header['dtype']} (0 = float32)")
    B, V, n = header["B"], header["V"], header["records"]
    if B <= 0 or V <= 0 or n < 0:
        raise ValueError(f"{path}: bad header B={B} V={V} records={n}")
    rec = np.dtype([("step", "<i4"), ("pos", "<i4"), ("logits", "<f4", (B, V))])
    body = size - DUMP_HEADER_INTS * 4
    if body != n * rec.itemsize:
        raise ValueError(f"{path}: {body} bytes of records, the header's {n} records of B={B} "
                         f"V={V} need {n * rec.itemsize}")
    recs = np.fromfile(path, dtype=rec, count=n, offset=DUMP_HEADER_INTS * 4)
    return (header, [int(s) for s in recs["step"]], [int(s) for s in recs["pos"]],
            np.ascontiguousarray(recs["logits"], dtype=np.float32))
