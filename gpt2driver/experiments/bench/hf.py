"""The bench's Hugging Face rows: ``GPT2LMHeadModel.generate`` on our checkpoint, eager
(``hf-eager``, the default dynamic cache) and with the static-cache + torch.compile recipe
(``hf-compiled``), greedy, exactly ``gen`` new tokens after one start token, timed by the wall
clock around each call (the device synchronised before and after)."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...errors import BenchError, first_line
from ...names import HF_COMPILED, HF_EAGER
from ..executors.base import Log, stderr_log
from .hfmodel import hf_model_from_checkpoint, hf_unavailable_reason, start_token
from .rows import base_row, failed_row, skipped_row

COMPILE_RECIPE = ('static cache (generation_config.cache_implementation="static") + '
                  'torch.compile(model.forward, mode="reduce-overhead", fullgraph=True) for the '
                  "decode steps; the prefill, which allocates the static cache, runs eagerly (as "
                  "generate's own compilation does); generate's own automatic compilation "
                  "disabled so that this is the only one")


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


RowHook = Callable[[Dict[str, Any], Dict[str, Any]], None]


def run_hf(checkpoint, batches: Sequence[int], gen: int, precision: str, warmup: int,
           repeat: int, compile: bool = True, device: str = "cuda",
           log: Log = stderr_log, compile_backend: Optional[str] = None,
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
        msg = f"cannot build the Hugging Face model: {first_line(e)}"
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
            row = failed_row(variant, b, gen, precision, first_line(e))
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
                    msg = first_line(e)
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
