"""Hugging Face GPT-2 weights (a ``model.safetensors``) to an llm.c checkpoint.

``safetensors`` is imported when a conversion runs (the ``convert`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from ..errors import CheckpointError
from . import hfmap
from .checkpoint import ModelConfig, PathLike, param_shapes, write_stream


def _load_safetensors(path: Path) -> Dict[str, np.ndarray]:
    """Load all tensors of a safetensors file, names stripped of a ``transformer.`` prefix."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(
            "converting Hugging Face weights needs the safetensors package: "
            "pip install safetensors") from None
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot load safetensors file: {e}") from None
    return {hfmap.strip_prefix(k): v for k, v in tensors.items()}


def _hf_tensor(tensors: Mapping[str, np.ndarray], key: str, src: Path,
               shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    """One HF tensor as float32, checked against ``shape`` when given."""
    if key not in tensors:
        raise CheckpointError(f"{src}: Hugging Face tensor {key!r} not found")
    t = np.asarray(tensors[key], dtype=np.float32)
    if shape is not None and t.shape != shape:
        raise CheckpointError(f"{src}: tensor {key!r}: expected shape {shape}, found {t.shape}")
    return t


def _hf_config(tensors: Mapping[str, np.ndarray], hf_cfg: Mapping[str, object], src: Path,
               max_seq_len: Optional[int], num_heads: Optional[int]) -> ModelConfig:
    """Build the ModelConfig from config.json values, falling back to tensor shapes."""
    vocab, channels = _hf_tensor(tensors, hfmap.hf_name("wte"), src).shape
    positions = _hf_tensor(tensors, hfmap.hf_name("wpe"), src).shape[0]
    layer_ids = {k.split(".")[1] for k in tensors if k.startswith("h.")}
    layers = int(hf_cfg.get("n_layer", len(layer_ids)))
    channels = int(hf_cfg.get("n_embd", channels))
    vocab = int(hf_cfg.get("vocab_size", vocab))
    positions = int(hf_cfg.get("n_positions", hf_cfg.get("n_ctx", positions)))
    # GPT-2 uses 64 channels per head; config.json (or num_heads) overrides that guess.
    heads = int(num_heads or hf_cfg.get("n_head", max(channels // 64, 1)))
    if max_seq_len is not None:
        if not 0 < max_seq_len <= positions:
            raise CheckpointError(
                f"{src}: max_seq_len must be in 1..{positions} (n_positions), found {max_seq_len}")
        positions = max_seq_len
    return ModelConfig.custom(layers, heads, channels, max_seq_len=positions, vocab_size=vocab)


def _iter_hf_params(tensors: Mapping[str, np.ndarray], cfg: ModelConfig,
                    src: Path) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield llm.c tensors in file order, built from HF tensors (transposed, padded, cut)."""
    C, V, T = cfg.channels, cfg.vocab_size, cfg.max_seq_len
    for name, shape in param_shapes(cfg):
        if name == "wte":
            out = np.zeros(shape, dtype=np.float32)
            out[:V] = _hf_tensor(tensors, hfmap.hf_name("wte"), src, (V, C))
        elif name == "wpe":
            out = _hf_tensor(tensors, hfmap.hf_name("wpe"), src)[:T]
        elif name in hfmap.GLOBAL:
            out = _hf_tensor(tensors, hfmap.hf_name(name), src, shape)
        else:
            conv = hfmap.is_conv1d(name)
            hf_shape = shape[1:][::-1] if conv else shape[1:]
            out = np.empty(shape, dtype=np.float32)
            for i in range(cfg.num_layers):
                t = _hf_tensor(tensors, hfmap.hf_name(name, i), src, hf_shape)
                out[i] = t.T if conv else t
        yield name, out


def convert_hf(src: PathLike, dst: PathLike, dtype: str = "fp32",
               max_seq_len: Optional[int] = None, num_heads: Optional[int] = None) -> ModelConfig:
    """Convert Hugging Face GPT-2 weights to an llm.c checkpoint; return the config written.

    ``src`` is a directory holding ``model.safetensors`` (and normally ``config.json``) or a
    ``.safetensors`` file (a ``config.json`` beside it is used if present). Conv1D weights are
    transposed to (out, in), wte is zero-padded to a multiple of 128 rows, and wpe is cut to
    ``max_seq_len`` rows when given. Without config.json the shape comes from the tensors and
    the head count from ``num_heads`` (default: channels / 64, as in all GPT-2 sizes).
    """
    src = Path(src)
    if src.is_dir():
        st_path, cfg_path = src / "model.safetensors", src / "config.json"
    else:
        st_path, cfg_path = src, src.parent / "config.json"
    if not st_path.is_file():
        raise CheckpointError(f"{st_path}: safetensors file not found")
    hf_cfg: Dict[str, object] = {}
    if cfg_path.is_file():
        try:
            hf_cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: cannot read config.json: {e}") from None
    tensors = _load_safetensors(st_path)
    cfg = _hf_config(tensors, hf_cfg, st_path, max_seq_len, num_heads)
    write_stream(dst, cfg, _iter_hf_params(tensors, cfg, st_path), dtype)
    return cfg
