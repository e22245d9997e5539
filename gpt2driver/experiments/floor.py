"""The decode floor: the bytes a decode step must move at least, the step time they take at the
copy bandwidth, and the fraction of that floor a measured step reaches. The copy bandwidth itself
is measured with torch (:func:`measure_copy_bandwidth`) when torch and CUDA are there."""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Dict, Iterable, Optional

from .. import names
from ..errors import BenchError
from ..files.checkpoint import ModelConfig

COPY_BYTES = 1 << 30


def element_bytes(precision: str) -> int:
    """Bytes per weight / KV-cache element of a build precision (fp32 4, bf16 and fp16 2)."""
    return names.element_bytes(precision)


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


def add_floor(rows: Iterable[Dict[str, Any]], shape: Callable[[Dict[str, Any]], Optional[ModelConfig]],
              copy_gbps: Optional[float], prompt_len: int = 1) -> None:
    """Set bytes_per_step, floor_step_ms and (ok rows) floor_pct on each row whose model shape
    ``shape(row)`` is known; ``prompt_len`` for rows that do not say theirs."""
    for r in rows:
        cfg = shape(r)
        if cfg is None:
            continue
        mean_pos = mean_kv_positions(r.get("prompt_len") or prompt_len, r["gen"])
        nbytes = decode_bytes_per_step(cfg, r["batch"], mean_pos, element_bytes(r["precision"]))
        r["bytes_per_step"] = nbytes["total"]
        r["floor_step_ms"] = floor_step_ms(nbytes["total"], copy_gbps)
        if r.get("status") == "ok":
            frac = floor_fraction(nbytes["total"], r.get("step_ms"), copy_gbps)
            r["floor_pct"] = None if frac is None else frac * 100.0


def cuda_reason(device: str = "cuda") -> Optional[str]:
    """None when torch can use CUDA, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch)"
    if not torch.cuda.is_available():
        return f"CUDA is not available to torch {torch.__version__}"
    return None


def measure_copy_bandwidth(nbytes: int = COPY_BYTES, warmup: int = 3, repeat: int = 20,
                           device: str = "cuda") -> Dict[str, Any]:
    """Device-to-device copy bandwidth with torch: ``dst.copy_(src)`` of ``nbytes``, timed with
    CUDA events, bytes read + written (2 x nbytes) per copy; GB/s = 1e9 bytes/s.

    Returns {"gbps": median, "gbps_min", "gbps_max", "nbytes", "repeat", "device"}; raises
    BenchError when CUDA is not available."""
    reason = cuda_reason(device)
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


def copy_source(bw: Dict[str, Any]) -> str:
    """How a measured copy bandwidth was measured (for the results' meta data)."""
    return (f"measured: torch copy of {bw['nbytes'] >> 20} MiB, bytes read + written, median of "
            f"{bw['repeat']}")
