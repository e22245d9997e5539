"""llm.c tensor names <-> Hugging Face GPT-2 tensor names, in one table.

Hugging Face stores the linear layers as Conv1D weights, shaped (in, out); llm.c stores them
(out, in). Its vocabulary rows are not padded; llm.c pads ``wte`` to a multiple of 128 rows.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

# llm.c layer tensor -> (HF name inside ``h.<i>.``, is a Conv1D weight stored (in, out))
LAYER: Dict[str, Tuple[str, bool]] = {
    "ln1w": ("ln_1.weight", False), "ln1b": ("ln_1.bias", False),
    "qkvw": ("attn.c_attn.weight", True), "qkvb": ("attn.c_attn.bias", False),
    "attprojw": ("attn.c_proj.weight", True), "attprojb": ("attn.c_proj.bias", False),
    "ln2w": ("ln_2.weight", False), "ln2b": ("ln_2.bias", False),
    "fcw": ("mlp.c_fc.weight", True), "fcb": ("mlp.c_fc.bias", False),
    "fcprojw": ("mlp.c_proj.weight", True), "fcprojb": ("mlp.c_proj.bias", False),
}
# llm.c tensors that are not per layer -> HF name
GLOBAL: Dict[str, str] = {"wte": "wte.weight", "wpe": "wpe.weight", "lnfw": "ln_f.weight",
                          "lnfb": "ln_f.bias"}
PREFIX = "transformer."  # GPT2LMHeadModel's state dict puts the model under it


def hf_name(ours: str, layer: Optional[int] = None, prefix: str = "") -> str:
    """The HF name of an llm.c tensor (of layer ``layer`` for the per-layer ones)."""
    if ours in GLOBAL:
        return prefix + GLOBAL[ours]
    return f"{prefix}h.{layer}.{LAYER[ours][0]}"


def is_conv1d(ours: str) -> bool:
    """True for the weights HF stores transposed, (in, out)."""
    return ours in LAYER and LAYER[ours][1]


def strip_prefix(name: str) -> str:
    """An HF name without the ``transformer.`` of GPT2LMHeadModel's state dict."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name
