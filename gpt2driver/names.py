"""The one place that knows the names: variants, programs, precisions, ablation switches, model
sizes, peers and profilers. Every other module takes them from here.

Precisions are normalised by :func:`precision` alone (any case in, ``FP32`` / ``FP16`` / ``BF16``
out); :func:`precision_dtype` and :func:`element_bytes` derive the checkpoint dtype and the element
size from it.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .errors import BadInput

# The three generators, the two other programs, and what validate / profile check.
VARIANTS = ("naive", "kvonly", "optimized")
PROGRAMS = VARIANTS + ("validate", "profile")
CACHED_VARIANTS = ("kvonly", "optimized")

# The oldest compute capability the engine builds for (the Makefile's check-config says the same).
MIN_CC = 70
MAX_CC = 999

# Build precisions: the Makefile's PRECISION, the build directory's suffix in lower case.
PRECISIONS = ("FP32", "FP16", "BF16")
_DTYPE = {"FP32": "fp32", "FP16": "bf16", "BF16": "bf16"}  # checkpoint dtype a build reads
_ELEMENT_BYTES = {"FP32": 4, "FP16": 2, "BF16": 2}
_PRECISION_ALIASES = {"FLOAT32": "FP32", "FLOAT16": "FP16", "HALF": "FP16", "BFLOAT16": "BF16"}


def precision(value: str) -> str:
    """``FP32``, ``FP16`` or ``BF16`` for any spelling of them (``bf16``, ``bfloat16``...)."""
    p = str(value).strip().upper()
    p = _PRECISION_ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise BadInput(f"unknown precision {value!r}; choose one of {', '.join(PRECISIONS)}")
    return p


def precision_dtype(value: str) -> str:
    """The checkpoint dtype a build of this precision reads: bf16 for BF16/FP16, fp32 for FP32."""
    return _DTYPE[precision(value)]


def element_bytes(value: str) -> int:
    """Bytes per weight / KV-cache element in a build of this precision (fp32 4, bf16/fp16 2)."""
    return _ELEMENT_BYTES[precision(value)]


# Ablations: the executables' `--no-<name>` switches (optimized, validate and profile take them;
# docs/protocol.md). The experimental `--short-links` turns a path on, not a trick off: it is not one.
ABLATIONS = ("graph", "gemv", "fused", "split-attn", "pdl")
ALL_ON = "none"  # the ablation value with every trick on
ABLATABLE = ("optimized",)  # the generators that take the switches


def ablation(value: str) -> str:
    """The canonical spelling of an ablation value: ``none``, one switch name, or switches joined
    by ``+`` in the order of :data:`ABLATIONS` (``pdl+graph`` -> ``graph+pdl``)."""
    text = str(value).strip().lower()
    if text in (ALL_ON, ""):
        return ALL_ON
    parts = [p.strip().removeprefix("--no-") for p in text.split("+")]
    bad = [p for p in parts if p not in ABLATIONS]
    if bad:
        raise BadInput(f"unknown ablation {bad[0]!r}; use {ALL_ON}, one of {', '.join(ABLATIONS)} "
                       f"or several joined by + (e.g. graph+pdl)")
    return "+".join(n for n in ABLATIONS if n in parts)


def ablation_flags(value: str) -> List[str]:
    """The executable's switches for an ablation value (``graph+pdl`` -> --no-graph --no-pdl)."""
    canon = ablation(value)
    return [] if canon == ALL_ON else [f"--no-{n}" for n in canon.split("+")]


def every_ablation() -> List[str]:
    """``none`` and each switch off alone: the ablation preset."""
    return [ALL_ON, *ABLATIONS]


# GPT-2 sizes: name -> (layers, heads, channels); context 1024, vocabulary 50257.
MODEL_SIZES: Dict[str, Tuple[int, int, int]] = {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
DEFAULT_MODEL = "gpt2"

# Peers in the bench: Hugging Face generate, and gpt2_optim's own program.
HF_EAGER = "hf-eager"
HF_COMPILED = "hf-compiled"
HF_VARIANTS = (HF_EAGER, HF_COMPILED)
GPT2OPTIM_NAIVE = "gpt2_optim-naive"
GPT2OPTIM_KVCACHE = "gpt2_optim-kvcache"
GPT2OPTIM_VARIANTS = (GPT2OPTIM_NAIVE, GPT2OPTIM_KVCACHE)
ALL_VARIANTS = VARIANTS + HF_VARIANTS + GPT2OPTIM_VARIANTS  # the order of the bench table

# Who timed a row: our executables (CUDA events inside), torch around generate, gpt2_optim itself.
TIMED_BY_ENGINE = "engine"
TIMED_BY_HF = "wall clock around generate"
TIMED_BY_GPT2OPTIM = "gpt2_optim's own Token per second"

PROFILE_TOOLS = ("nsys", "ncu", "builtin", "trace")


def timed_by(variant: str) -> str:
    """Who times the rows of a variant."""
    if variant in HF_VARIANTS:
        return TIMED_BY_HF
    if variant in GPT2OPTIM_VARIANTS:
        return TIMED_BY_GPT2OPTIM
    return TIMED_BY_ENGINE


def choices(names: Sequence[str], text: str, what: str = "names") -> List[str]:
    """Comma-separated names, lower-cased, deduplicated in order; BadInput for unknown ones."""
    got = [v.strip().lower() for v in str(text).split(",") if v.strip()]
    if not got:
        raise BadInput(f"expected one or more of {', '.join(names)}")
    bad = [v for v in got if v not in names]
    if bad:
        raise BadInput(f"{bad[0]!r} is not one of {', '.join(names)}")
    return list(dict.fromkeys(got))
