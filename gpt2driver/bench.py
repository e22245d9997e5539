"""``gpt2driver bench``: our three executables against Hugging Face's GPT-2 on the same weights.

One run on one GPU measures

- naive, kvonly and optimized through the built executables, exactly as a sweep does
  (:class:`gpt2driver.sweep.PointRunner`: ``--warmup``, ``--repeat``, medians);
- where torch and transformers import and CUDA is available, ``GPT2LMHeadModel.generate`` built
  from the same llm.c checkpoint (:func:`hf_model_from_checkpoint`): ``hf-eager`` (the default
  dynamic cache, no compilation) and ``hf-compiled`` (a static cache and
  ``torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)``, the recipe of
  Transformers' "Optimizing inference" guide), greedy, exactly ``gen`` new tokens after one start
  token (EOT 50256), in the build's precision;
- the device-to-device copy bandwidth (:func:`measure_copy_bandwidth`), against which each
  variant's step time is put as a fraction of the decode floor (:func:`decode_bytes_per_step`).

torch and transformers are optional: they are imported inside the functions that need them, and
without them (or without CUDA) the Hugging Face rows say ``skipped: <reason>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .checkpoint import (DEFAULT_MODEL_CONFIG, CheckpointError, ModelConfig, atomic_write_text,
                         read_header)
from .runner import VARIANTS, repo_root
from .sweep import PointRunner, _clean, _stderr, resolve_model

HF_EAGER = "hf-eager"
HF_COMPILED = "hf-compiled"
HF_VARIANTS = (HF_EAGER, HF_COMPILED)
ALL_VARIANTS = VARIANTS + HF_VARIANTS
PEERS = {"vs_naive": "naive", "vs_hf_eager": HF_EAGER, "vs_hf_compiled": HF_COMPILED}

EOT_ID = 50256
PROMPT_LEN = 1  # one start token, as the default sweep
COPY_BYTES = 1 << 30
COMPILE_RECIPE = ('static cache (generation_config.cache_implementation="static") + '
                  'torch.compile(model.forward, mode="reduce-overhead", fullgraph=True) for the '
                  "decode steps; the prefill, which allocates the static cache, runs eagerly (as "
                  "generate's own compilation does); generate's own automatic compilation "
                  "disabled so that this is the only one")

COLUMNS = ("variant", "batch", "gen", "prompt_len", "precision", "status", "error",
           "tokens_per_s_median", "tokens_per_s_min", "tokens_per_s_max", "step_ms", "total_ms",
           "reps", "gpu", "bytes_per_step", "floor_step_ms", "floor_pct", "vs_naive",
           "vs_hf_eager", "vs_hf_compiled", "wall_s")

Log = Callable[[str], None]


class BenchError(RuntimeError):
    """A part of the benchmark cannot run (no CUDA, no torch...)."""


# ------------------------------------------------------------------------------------------------
# The decode floor
# ------------------------------------------------------------------------------------------------


def element_bytes(precision: str) -> int:
    """Bytes per weight / KV-cache element of a build precision (fp32 4, bf16 and fp16 2)."""
    p = str(precision).lower()
    if p in ("fp32", "float32"):
        return 4
    if p in ("bf16", "fp16", "bfloat16", "float16"):
        return 2
    raise ValueError(f"unknown precision {precision!r}; expected fp32, fp16 or bf16")


def mean_kv_positions(prompt_len: int, gen: int) -> float:
    """Mean number of cached positions a decode step reads over a whole generation.

    Step s (0 .. gen-1) attends over the prompt and the s tokens made before it: prompt_len + s
    keys and values. The mean is prompt_len + (gen - 1) / 2 (256.5 for 1 start token and 512
    new tokens)."""
    if prompt_len < 1 or gen < 1:
        raise ValueError("prompt_len and gen must be >= 1")
    return prompt_len + (gen - 1) / 2.0


def decode_bytes_per_step(cfg: ModelConfig, batch: int, mean_pos: float,
                          elem_bytes: int = 2) -> Dict[str, float]:
    """Bytes a decode step must move at least: every weight once (the checkpoint's parameter
    count, padded wte rows included) plus the KV cache read at ``mean_pos`` positions,
    2 (K and V) x L x B x mean_pos x C elements."""
    weights = cfg.num_parameters * elem_bytes
    kv = 2 * cfg.num_layers * batch * mean_pos * cfg.channels * elem_bytes
    return {"weights": float(weights), "kv": float(kv), "total": float(weights + kv)}


def floor_step_ms(bytes_per_step: float, copy_gbps: Optional[float]) -> Optional[float]:
    """The step time at the copy bandwidth (GB/s, 1e9 bytes/s), in ms; None without it."""
    if not copy_gbps or copy_gbps <= 0 or bytes_per_step is None:
        return None
    return bytes_per_step / (copy_gbps * 1e9) * 1e3


def floor_fraction(bytes_per_step: float, step_ms: Optional[float],
                   copy_gbps: Optional[float]) -> Optional[float]:
    """Achieved fraction of the decode floor: (bytes per step / step time) / copy bandwidth,
    i.e. floor step time / measured step time (1.0 = at the floor); None when unknown."""
    floor = floor_step_ms(bytes_per_step, copy_gbps)
    if floor is None or not step_ms or step_ms <= 0 or not math.isfinite(step_ms):
        return None
    return floor / step_ms


# ------------------------------------------------------------------------------------------------
# torch and Hugging Face (imported lazily)
# ------------------------------------------------------------------------------------------------


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


# our name -> (HF name inside transformer.h.<i>., is a Conv1D weight stored (in, out))
_LAYER_KEYS = (("ln1w", "ln_1.weight", False), ("ln1b", "ln_1.bias", False),
               ("qkvw", "attn.c_attn.weight", True), ("qkvb", "attn.c_attn.bias", False),
               ("attprojw", "attn.c_proj.weight", True), ("attprojb", "attn.c_proj.bias", False),
               ("ln2w", "ln_2.weight", False), ("ln2b", "ln_2.bias", False),
               ("fcw", "mlp.c_fc.weight", True), ("fcb", "mlp.c_fc.bias", False),
               ("fcprojw", "mlp.c_proj.weight", True), ("fcprojb", "mlp.c_proj.bias", False))


def hf_state_dict(cfg: ModelConfig, params: Dict[str, Any]) -> Dict[str, Any]:
    """GPT2LMHeadModel's state dict (float32 CPU tensors) from our parameters: Conv1D weights
    transposed to (in, out), wte without its padding rows, lm_head left to the tie with wte."""
    import numpy as np
    import torch

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    sd = {"transformer.wte.weight": t(params["wte"][:cfg.vocab_size]),
          "transformer.wpe.weight": t(params["wpe"]),
          "transformer.ln_f.weight": t(params["lnfw"]),
          "transformer.ln_f.bias": t(params["lnfb"])}
    for i in range(cfg.num_layers):
        for ours, theirs, conv in _LAYER_KEYS:
            a = params[ours][i]
            sd[f"transformer.h.{i}.{theirs}"] = t(a.T if conv else a)
    return sd


def hf_model_from_checkpoint(path, dtype="bf16", device="cpu",
                             attn_implementation: Optional[str] = None):
    """A transformers GPT2LMHeadModel (eval mode, on ``device``, in ``dtype``) holding the
    weights of our llm.c checkpoint ``path``.

    The checkpoint is read with :func:`gpt2driver.checkpoint.read_checkpoint`; bf16 checkpoints
    load exactly into a bf16 model. ``attn_implementation`` (e.g. "eager", "sdpa") defaults to
    transformers' own choice."""
    import torch
    import transformers

    from .checkpoint import read_checkpoint

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


@dataclass
class GenerateTiming:
    """Wall times of timed ``generate`` calls and what they returned."""

    batch: int
    gen: int
    times_s: List[float]
    warmup_s: List[float] = field(default_factory=list)
    output_shape: Tuple[int, ...] = ()
    tokens: Any = None  # the last call's output ids (CPU tensor)

    def tokens_per_s(self) -> Dict[str, float]:
        vals = sorted(self.batch * self.gen / t for t in self.times_s if t > 0)
        if not vals:
            return {"median": math.nan, "min": math.nan, "max": math.nan}
        return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else math.nan


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_generate(model, batch: int, gen: int, warmup: int = 1, repeat: int = 3,
                  token_id: Optional[int] = None, log: Optional[Log] = None,
                  compiling: bool = False) -> GenerateTiming:
    """Time ``model.generate``: greedy, one start token per row, exactly ``gen`` new tokens
    (min_new_tokens = max_new_tokens), ``warmup`` untimed calls then ``repeat`` timed ones.
    On CUDA the device is synchronised before and after each call. With ``compiling`` (a
    torch.compile'd forward) the first call's logged time is labelled as including the
    compilation (or a recompilation for a new batch size)."""
    import torch

    device = model.device
    tok = start_token(model.config) if token_id is None else token_id
    ids = torch.full((batch, 1), tok, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=False, max_new_tokens=gen, min_new_tokens=gen,
              pad_token_id=tok, eos_token_id=tok, num_beams=1)
    timing = GenerateTiming(batch, gen, [])
    out = None
    for i in range(warmup + repeat):
        _sync(device)
        t0 = time.perf_counter()
        try:
            out = model.generate(ids, **kw)
            _sync(device)
        except Exception:
            if log:
                log(f"    {'warm-up' if i < warmup else 'timed'} generate failed after "
                    f"{time.perf_counter() - t0:.3f} s")
            raise
        dt = time.perf_counter() - t0
        (timing.warmup_s if i < warmup else timing.times_s).append(dt)
        if log:
            note = (" (first call: includes torch.compile compilation)"
                    if compiling and i == 0 else "")
            log(f"    {'warm-up' if i < warmup else 'timed'} generate {dt:.3f} s{note}")
    if out is not None:
        timing.output_shape = tuple(out.shape)
        timing.tokens = out.detach().cpu()
        if timing.output_shape != (batch, 1 + gen):
            raise BenchError(f"generate returned shape {timing.output_shape}, expected "
                             f"{(batch, 1 + gen)}")
    return timing


def cache_unallocated(cache) -> bool:
    """True when a transformers cache has layers whose tensors are not allocated yet
    (transformers 5's lazily initialised StaticLayer); False for None, an allocated cache and
    caches without ``layers`` / ``is_initialized`` (transformers 4 allocates in __init__)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return not all(getattr(layer, "is_initialized", True) for layer in layers)


class compiled_decode:
    """Context manager: the static-cache + torch.compile recipe on ``model`` for its duration.

    Sets ``generation_config.cache_implementation = "static"`` and replaces ``model.forward`` by
    ``torch.compile(model.forward, mode=mode, fullgraph=fullgraph)``. Since transformers 4.4x,
    ``generate`` also compiles the model's call by itself when the cache is static on a GPU;
    that is turned off (``disable_compile``) so the recipe's compile is the one measured, with
    its fullgraph=True.

    A call whose static cache is not allocated yet (the prefill: transformers 5 allocates the
    cache lazily, inside the first forward) goes to the eager forward, as generate's own
    compilation does: compiled, the cache tensors would be CUDA-graph outputs that the next
    replay overwrites ("accessing tensor output of CUDAGraphs that has been overwritten", seen
    with torch 2.11 / transformers 5.17 on an H100), and they would not be marked static.

    Dynamo's caches are reset on entry unless ``reset=False``; run_hf
    enters it once for all batch sizes, so that dynamo recompiles for a new batch size (with a
    dynamic batch dimension from the second one on) instead of starting from scratch.
    ``backend`` (e.g. "eager") replaces inductor: a quick check of the graph capture in tests.
    """

    def __init__(self, model, mode: str = "reduce-overhead", fullgraph: bool = True,
                 backend: Optional[str] = None, reset: bool = True):
        self.model, self.mode, self.fullgraph, self.backend, self.reset = (
            model, mode, fullgraph, backend, reset)

    def __enter__(self):
        import torch

        m, gc = self.model, self.model.generation_config
        if self.reset:
            torch._dynamo.reset()
        self._saved = {k: getattr(gc, k, None) for k in ("cache_implementation", "disable_compile")}
        self._had_forward = "forward" in vars(m)
        gc.cache_implementation = "static"
        if hasattr(gc, "disable_compile"):
            gc.disable_compile = True
        kw = {"fullgraph": self.fullgraph}
        if self.backend:
            kw["backend"] = self.backend
        else:
            kw["mode"] = self.mode
        eager = m.forward
        compiled = torch.compile(eager, **kw)

        def forward(*args, **kwargs):
            if cache_unallocated(kwargs.get("past_key_values")):
                return eager(*args, **kwargs)
            return compiled(*args, **kwargs)

        forward.eager, forward.compiled = eager, compiled
        m.forward = forward
        return m

    def __exit__(self, *exc):
        m, gc = self.model, self.model.generation_config
        if not self._had_forward and "forward" in vars(m):
            del m.forward
        for k, v in self._saved.items():
            if hasattr(gc, k):
                setattr(gc, k, v)
        return False


def measure_copy_bandwidth(nbytes: int = COPY_BYTES, warmup: int = 3, repeat: int = 20,
                           device: str = "cuda") -> Dict[str, Any]:
    """Device-to-device copy bandwidth with torch: ``dst.copy_(src)`` of ``nbytes``, timed with
    CUDA events, bytes read + written (2 x nbytes) per copy; GB/s = 1e9 bytes/s.

    Returns {"gbps": median, "gbps_min", "gbps_max", "nbytes", "repeat", "device"}; raises
    BenchError when CUDA is not available."""
    reason = _cuda_reason(device)
    if reason:
        raise BenchError(reason)
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    src.fill_(1)
    try:
        for _ in range(warmup):
            dst.copy_(src)
        torch.cuda.synchronize(device)
        rates = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
            rates.append(2 * nbytes / (ms * 1e-3) / 1e9)
    finally:
        del src, dst
        torch.cuda.empty_cache()
    return {"gbps": statistics.median(rates), "gbps_min": min(rates), "gbps_max": max(rates),
            "nbytes": nbytes, "repeat": repeat, "device": torch.cuda.get_device_name(device)}


def _cuda_reason(device: str = "cuda") -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch)"
    if not torch.cuda.is_available():
        return f"CUDA is not available to torch {torch.__version__}"
    return None


# ------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------


def base_row(variant: str, batch: int, gen: int, precision: str) -> Dict[str, Any]:
    row = {c: None for c in COLUMNS}
    row.update(variant=variant, batch=batch, gen=gen, prompt_len=PROMPT_LEN,
               precision=str(precision).lower(), status="ok", wall_s=0.0)
    return row


def skipped_row(variant: str, batch: int, gen: int, precision: str, reason: str) -> Dict[str, Any]:
    return {**base_row(variant, batch, gen, precision), "status": "skipped", "error": reason}


def failed_row(variant: str, batch: int, gen: int, precision: str, error: str) -> Dict[str, Any]:
    return {**base_row(variant, batch, gen, precision), "status": "failed", "error": error}


def engine_row(sweep_row: Dict[str, Any]) -> Dict[str, Any]:
    """A bench row from a sweep row (gpt2driver.sweep.make_row)."""
    r = sweep_row
    row = base_row(r["variant"], r["batch"], r["gen"], r["precision"])
    row.update(status=r["status"], error=r.get("error"), gpu=r.get("gpu"),
               tokens_per_s_median=r.get("tokens_per_s_median"),
               tokens_per_s_min=r.get("tokens_per_s_min"),
               tokens_per_s_max=r.get("tokens_per_s_max"), step_ms=r.get("step_ms"),
               total_ms=r.get("total_ms"), reps=r.get("repeat"), wall_s=r.get("wall_s"))
    return row


def hf_row(variant: str, timing: GenerateTiming, precision: str, gpu: Optional[str],
           wall_s: float) -> Dict[str, Any]:
    """A bench row from timed generate calls: step time = median wall time / gen."""
    row = base_row(variant, timing.batch, timing.gen, precision)
    tps = timing.tokens_per_s()
    med = timing.median_s
    row.update(gpu=gpu, tokens_per_s_median=tps["median"], tokens_per_s_min=tps["min"],
               tokens_per_s_max=tps["max"], total_ms=med * 1e3, step_ms=med * 1e3 / timing.gen,
               reps=len(timing.times_s), wall_s=round(wall_s, 3))
    return row


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


RowHook = Callable[[Dict[str, Any], Dict[str, Any]], None]


def run_hf(checkpoint, batches: Sequence[int], gen: int, precision: str, warmup: int,
           repeat: int, compile: bool = True, device: str = "cuda",
           log: Log = _stderr, compile_backend: Optional[str] = None,
           eager_warmup: Optional[int] = None, on_row: Optional[RowHook] = None,
           ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The Hugging Face rows (hf-eager for every batch, then hf-compiled for every batch when
    ``compile``: the cheap rows first) and notes for the results' meta data. Rows are "skipped"
    when torch / transformers / CUDA are missing, "failed" with the exception's first line when
    something breaks.

    ``warmup`` untimed calls precede the compiled rows' timed ones (the first one compiles);
    hf-eager compiles nothing and gets ``eager_warmup`` (default: min(warmup, 1)).
    The compiled rows share one :class:`compiled_decode` (dynamo reset once, before the first
    compiled batch). ``on_row(row, info)`` is called after each row is made, in order, with the
    meta notes so far. ``compile_backend`` replaces inductor (tests on the CPU use "eager")."""
    variants = [HF_EAGER] + ([HF_COMPILED] if compile else [])
    if eager_warmup is None:
        eager_warmup = min(warmup, 1)
    info: Dict[str, Any] = {"hf_device": device, "hf_dtype": str(precision).lower(),
                            "hf_compile_recipe": COMPILE_RECIPE if compile else None}
    rows: List[Dict[str, Any]] = []

    def add(row: Dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row, info)

    reason = hf_unavailable_reason(device)
    if reason:
        info["hf_skipped"] = reason
        for v in variants:
            for b in batches:
                add(skipped_row(v, b, gen, precision, reason))
        return rows, info
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__)
    t0 = time.monotonic()
    try:
        model = hf_model_from_checkpoint(checkpoint, precision, device)
    except Exception as e:  # CheckpointError, OOM, a transformers API change
        msg = f"cannot build the Hugging Face model: {_first_line(e)}"
        log(msg)
        for v in variants:
            for b in batches:
                add(failed_row(v, b, gen, precision, msg))
        return rows, info
    log(f"Hugging Face model built in {time.monotonic() - t0:.1f} s "
        f"(attention: {getattr(model.config, '_attn_implementation', '?')})")
    info["hf_attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    gpu = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    on_cuda = torch.device(device).type == "cuda"

    def one(variant: str, b: int) -> None:
        compiled = variant == HF_COMPILED
        n_warm = warmup if compiled else eager_warmup
        first = ", the first compiles" if compiled and n_warm else ""
        log(f"{variant} B={b} gen={gen} (warm-up {n_warm}{first}; timed {repeat}) ...")
        t0 = time.monotonic()
        try:
            timing = time_generate(model, b, gen, n_warm, repeat, log=log, compiling=compiled)
            row = hf_row(variant, timing, precision, gpu, time.monotonic() - t0)
            log(f"{variant} B={b} gen={gen} ... {row['tokens_per_s_median']:.0f} tok/s")
        except Exception as e:  # OOM, compile errors: recorded, the others go on
            row = failed_row(variant, b, gen, precision, _first_line(e))
            row["wall_s"] = round(time.monotonic() - t0, 3)
            log(f"{variant} B={b} gen={gen} ... FAILED: {row['error']}")
            if on_cuda:
                torch.cuda.empty_cache()
        add(row)

    try:
        for b in batches:
            one(HF_EAGER, b)
        if compile:
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(compiled_decode(model, backend=compile_backend,
                                                        reset=True))
                except Exception as e:  # torch.compile itself refused
                    msg = _first_line(e)
                    log(f"{HF_COMPILED} ... FAILED: {msg}")
                    for b in batches:
                        add(failed_row(HF_COMPILED, b, gen, precision, msg))
                else:
                    for b in batches:
                        one(HF_COMPILED, b)
    finally:
        del model
        if on_cuda:
            torch.cuda.empty_cache()
    return rows, info


def run_engine(points: List[Dict[str, Any]], cc: Optional[int], timeout: float,
               log: Log = _stderr, cc_reason: str = "",
               on_row: Optional[Callable[[Dict[str, Any]], None]] = None,
               ) -> List[Dict[str, Any]]:
    """The executables' rows, one point after the other (a sweep's PointRunner): failures are
    recorded in the rows and the others go on. Without ``cc`` every row fails with
    ``cc_reason``. ``on_row(row)`` is called after each row."""
    rows = []
    runner = PointRunner(cc, timeout) if cc else None
    for i, p in enumerate(points, 1):
        label = f"[{i}/{len(points)}] {p['variant']} B={p['batch']} gen={p['gen']}"
        if runner is None:
            row = failed_row(p["variant"], p["batch"], p["gen"], p["precision"], cc_reason)
            log(f"{label} ... FAILED: {cc_reason}")
        else:
            row = engine_row(runner.run(p))
            if row["status"] == "ok":
                log(f"{label} ... {row['tokens_per_s_median']:.0f} tok/s")
            else:
                log(f"{label} ... FAILED: {row['error']}")
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


# ------------------------------------------------------------------------------------------------
# Summary and output
# ------------------------------------------------------------------------------------------------


def summarize(rows: Iterable[Dict[str, Any]], cfg: Optional[ModelConfig],
              copy_gbps: Optional[float]):
    """A DataFrame of the rows, ordered by batch then variant, with the floor (bytes per step,
    floor step time, % of floor) and the ratios of tokens/s to naive, hf-eager and hf-compiled
    at the same batch size."""
    import pandas as pd

    rows = [dict(r) for r in rows]
    order = {v: k for k, v in enumerate(ALL_VARIANTS)}
    rows.sort(key=lambda r: (r["batch"], order.get(r["variant"], len(order))))
    best = {(r["variant"], r["batch"]): r.get("tokens_per_s_median") for r in rows
            if r.get("status") == "ok"}
    for r in rows:
        if cfg is not None:
            mean_pos = mean_kv_positions(r.get("prompt_len") or PROMPT_LEN, r["gen"])
            nbytes = decode_bytes_per_step(cfg, r["batch"], mean_pos,
                                           element_bytes(r["precision"]))["total"]
            r["bytes_per_step"] = nbytes
            r["floor_step_ms"] = floor_step_ms(nbytes, copy_gbps)
            if r.get("status") == "ok":
                frac = floor_fraction(nbytes, r.get("step_ms"), copy_gbps)
                r["floor_pct"] = None if frac is None else frac * 100.0
        tps = r.get("tokens_per_s_median")
        for col, peer in PEERS.items():
            base = best.get((peer, r["batch"]))
            ok = r.get("status") == "ok" and tps and base
            r[col] = tps / base if ok else None
    return pd.DataFrame([{c: _clean(r.get(c)) for c in COLUMNS} for r in rows],
                        columns=list(COLUMNS))


def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return fmt.format(v)


def format_table(df) -> str:
    """variant, B, tok/s median (min–max), step ms, vs naive / HF eager / HF compiled, % of
    floor, status."""
    from tabulate import tabulate

    if df.empty:
        return "(no results)"
    headers = ["variant", "B", "tok/s median (min–max)", "step ms", "vs naive", "vs HF eager",
               "vs HF compiled", "% of floor", "status"]
    body = []
    for r in df.to_dict("records"):
        tps = ""
        if _num(r["tokens_per_s_median"], "{}"):
            tps = (f"{r['tokens_per_s_median']:.1f} ({_num(r['tokens_per_s_min'], '{:.1f}')}"
                   f"–{_num(r['tokens_per_s_max'], '{:.1f}')})")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {str(r['error'])[:110]}"
        body.append([r["variant"], r["batch"], tps, _num(r["step_ms"], "{:.4f}"),
                     _num(r["vs_naive"], "{:.2f}x"), _num(r["vs_hf_eager"], "{:.2f}x"),
                     _num(r["vs_hf_compiled"], "{:.2f}x"), _num(r["floor_pct"], "{:.1f} %"),
                     status])
    align = ["left"] + ["right"] * 7 + ["left"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=align)


def format_header(meta: Dict[str, Any]) -> str:
    """The lines above the table: GPU, model, copy bandwidth and what the floor counts (and a
    first line saying so while the run is not complete)."""
    hf_warmup = meta.get("hf_warmup")
    hf_eager_warmup = min(hf_warmup, 1) if isinstance(hf_warmup, int) else hf_warmup
    lines = [f"GPU: {meta.get('gpu') or 'unknown'}; {meta.get('precision', '').upper()}, "
             f"{meta.get('prompt_len')} start token, {meta.get('gen')} new greedy tokens; engine: "
             f"warm-up {meta.get('warmup')}, median of {meta.get('repeat')}; Hugging Face: "
             f"warm-up {hf_eager_warmup} eager / {hf_warmup} compiled, median of "
             f"{meta.get('repeat')}"]
    if meta.get("complete") is False:
        lines.insert(0, "PARTIAL RESULTS: the run has not finished (rows so far)")
    m = meta.get("model")
    if m:
        lines.append(f"model: {meta.get('checkpoint')} (L={m['num_layers']} NH={m['num_heads']} "
                     f"C={m['channels']} V={m['vocab_size']}, {m['num_parameters']:,} parameters "
                     f"= {meta['weights_bytes'] / 1e6:.1f} MB of weights)")
    bw = meta.get("copy_gbps")
    if bw:
        lines.append(f"copy bandwidth: {bw:.0f} GB/s ({meta.get('copy_source')}); floor per step "
                     f"= weights + KV cache at the mean position {meta.get('mean_kv_positions')}")
    else:
        note = meta.get("copy_note") or "not measured yet"
        lines.append(f"copy bandwidth: unknown ({note}): no % of floor (give --copy-gbps)")
    return "\n".join(lines)


def results_dir(base: Optional[Path] = None, stamp: Optional[str] = None) -> Path:
    """``<base>/<timestamp>`` (base: results/bench in the repository); -2, -3... if taken."""
    base = Path(base) if base else repo_root() / "results" / "bench"
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    path, n = base / stamp, 2
    while path.exists():
        path, n = base / f"{stamp}-{n}", n + 1
    return path


def write_results(out_dir: Path, df, meta: Dict[str, Any], table: str) -> Dict[str, Path]:
    """results.csv (the rows), results.json ({"meta": ..., "rows": [...]}) and table.txt, each
    replaced atomically (:func:`gpt2driver.checkpoint.atomic_write_text`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json",
             "table": out_dir / "table.txt"}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    records = json.loads(df.to_json(orient="records"))
    atomic_write_text(paths["json"], json.dumps({"meta": meta, "rows": records}, indent=2,
                                           default=str) + "\n")
    atomic_write_text(paths["table"], table + "\n")
    return paths


# ------------------------------------------------------------------------------------------------
# The whole benchmark
# ------------------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    batches: Sequence[int] = (1, 4, 16)
    gen: int = 512
    precision: str = "bf16"
    variants: Sequence[str] = VARIANTS
    checkpoint: Optional[str] = None
    cc: Optional[int] = None
    warmup: int = 1
    repeat: int = 3
    hf: bool = True
    hf_compile: bool = True
    hf_warmup: int = 2
    copy_gbps: Optional[float] = None
    timeout: float = 600.0
    out: Optional[str] = None


@dataclass
class BenchResult:
    df: Any
    meta: Dict[str, Any]
    table: str
    paths: Dict[str, Path]

    @property
    def failed(self) -> List[str]:
        bad = self.df[self.df["status"] == "failed"]
        return [f"{r['variant']} B={r['batch']}" for r in bad.to_dict("records")]


def parse_variants(text: str) -> List[str]:
    """Comma-separated engine variants, in the given order; ValueError for unknown ones."""
    names = [v.strip().lower() for v in str(text).split(",") if v.strip()]
    if not names:
        raise ValueError(f"expected one or more of {', '.join(VARIANTS)}")
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise ValueError(f"{bad[0]!r} is not one of {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def bench_points(opts: BenchOptions) -> List[Dict[str, Any]]:
    """The engine points, as a sweep config would expand them (batch, then variant)."""
    from .configs import expand, parse_config

    data = {"name": "bench", "precision": opts.precision, "variants": list(opts.variants),
            "batch": list(opts.batches), "gen": opts.gen, "prompt_len": PROMPT_LEN,
            "warmup": opts.warmup, "repeat": opts.repeat, "timeout_s": opts.timeout}
    if opts.checkpoint:
        data["checkpoint"] = str(opts.checkpoint)
    return expand(parse_config(data))


def model_config(default_model: Path) -> ModelConfig:
    """The default model's shape: its header, or DEFAULT_MODEL_CONFIG when the file cannot be
    read (only stand-ins in tests get there: the default model is always written with it)."""
    try:
        return read_header(default_model)[0]
    except CheckpointError:
        return DEFAULT_MODEL_CONFIG


def run_bench(opts: BenchOptions, log: Log = _stderr) -> BenchResult:
    """Run everything, write the results, return them. Raises ConfigError / CheckpointError for
    what stops the whole run (gen beyond the context, an unreadable checkpoint).

    Nothing finished is lost: the results directory is made (and logged) before the first row,
    and results.csv / results.json / table.txt are rewritten atomically after every row with
    ``meta["complete"] = False``; the last write, after everything, says True. A run killed
    mid-way leaves the rows finished so far."""
    from . import build as build_mod

    points = bench_points(opts)  # ConfigError when prompt + gen exceed the model's context
    if opts.checkpoint:
        checkpoint = Path(opts.checkpoint)
        cfg = read_header(checkpoint)[0]  # CheckpointError: the checkpoint's own message
    else:
        checkpoint = resolve_model("gpt2", opts.precision)  # the default model, made once
        cfg = model_config(checkpoint)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    out_dir = Path(opts.out) if opts.out else results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"results directory: {out_dir} (rewritten after every row)")

    cc, cc_reason = opts.cc, ""
    if cc is None:
        cc, why = build_mod.detect_cc()
        if cc is None:
            cc_reason = f"cannot detect the GPU's compute capability: {why} (use --cc)"

    meta: Dict[str, Any] = {
        "started": started, "host": socket.gethostname(), "cc": cc,
        "precision": str(opts.precision).lower(), "gen": opts.gen, "prompt_len": PROMPT_LEN,
        "batches": list(opts.batches), "variants": list(opts.variants), "warmup": opts.warmup,
        "repeat": opts.repeat, "hf_warmup": opts.hf_warmup, "checkpoint": str(checkpoint),
        "model": {**cfg.as_dict(), "num_parameters": cfg.num_parameters},
        "weights_bytes": cfg.num_parameters * element_bytes(opts.precision),
        "mean_kv_positions": mean_kv_positions(PROMPT_LEN, opts.gen),
        "copy_gbps": None, "copy_source": None, "copy_note": None,
    }
    rows: List[Dict[str, Any]] = []

    def save(complete: bool = False) -> Tuple[Any, str, Dict[str, Path]]:
        gpus = [r["gpu"] for r in rows if r.get("gpu")]
        for k in ("gpu", "finished", "complete"):  # kept last in the JSON
            meta.pop(k, None)
        meta["gpu"] = gpus[0] if gpus else None
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S") if complete else None
        meta["complete"] = complete
        df = summarize(rows, cfg, meta["copy_gbps"])
        table = format_header(meta) + "\n\n" + format_table(df)
        return df, table, write_results(out_dir, df, meta, table)

    def engine_done(row: Dict[str, Any]) -> None:
        rows.append(row)
        save()

    try:
        save()  # the meta data and no rows yet: the run is under way
        run_engine(points, cc, opts.timeout, log, cc_reason, on_row=engine_done)

        if opts.copy_gbps:
            meta.update(copy_gbps=float(opts.copy_gbps), copy_source="given with --copy-gbps")
        else:
            try:
                log("device-to-device copy bandwidth ...")
                bw = measure_copy_bandwidth()
                meta.update(copy_gbps=bw["gbps"], copy_gbps_min=bw["gbps_min"],
                            copy_gbps_max=bw["gbps_max"],
                            copy_source=f"measured: torch copy of {bw['nbytes'] >> 20} MiB, bytes "
                                        f"read + written, median of {bw['repeat']}")
                log(f"device-to-device copy bandwidth ... {bw['gbps']:.0f} GB/s")
            except BenchError as e:
                meta["copy_note"] = f"not measured: {e}"
            except Exception as e:  # a CUDA error, out of memory
                meta["copy_note"] = f"not measured: {_first_line(e)}"
        save()  # the engine rows with their % of floor

        if opts.hf:
            n_engine = len(rows)

            def hf_done(row: Dict[str, Any], info: Dict[str, Any]) -> None:
                rows.append(row)
                meta.update(info)
                save()

            hf, info = run_hf(checkpoint, list(opts.batches), opts.gen, opts.precision,
                              opts.hf_warmup, opts.repeat, compile=opts.hf_compile, log=log,
                              on_row=hf_done)
            del rows[n_engine:]  # the returned rows are the authority (on_row may not have run)
            rows += hf
            meta.update(info)
    except KeyboardInterrupt:
        log(f"interrupted: the {len(rows)} rows finished so far are in {out_dir} "
            f"(complete: false)")
        raise

    df, table, paths = save(complete=True)
    return BenchResult(df, meta, table, paths)
