"""What a bench writes and prints: the lines above its table, its results directory and files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

from ...files.atomic import atomic_write_text
from ...paths import repo_root
from ...tables.printers import render

PLOT = "tokens_per_s.png"


def format_header(meta: Dict[str, Any]) -> str:
    """The lines above the table: GPU, model, copy bandwidth and what the floor counts (and a
    first line saying so while the run is not complete)."""
    hf_warmup = meta.get("hf_warmup")
    hf_eager_warmup = min(hf_warmup, 1) if isinstance(hf_warmup, int) else hf_warmup
    hf = (f"; Hugging Face: warm-up {hf_eager_warmup} eager / {hf_warmup} compiled, median of "
          f"{meta.get('repeat')}" if meta.get("hf", True) else "")
    lines = [f"GPU: {meta.get('gpu') or 'unknown'}; {meta.get('precision', '').upper()}, "
             f"{meta.get('prompt_len')} start token, {meta.get('gen')} new greedy tokens; engine: "
             f"warm-up {meta.get('warmup')}, median of {meta.get('repeat')}{hf}"]
    if meta.get("complete") is False:
        lines.insert(0, "PARTIAL RESULTS: the run has not finished (rows so far)")
    m = meta.get("model")
    if m:
        lines.append(f"model: {meta.get('checkpoint')} (L={m['num_layers']} NH={m['num_heads']} "
                     f"C={m['channels']} V={m['vocab_size']}, {m['num_parameters']:,} parameters "
                     f"= {meta['weights_bytes'] / 1e6:.1f} MB of weights)")
    if meta.get("gpt2_optim"):
        lines.append(f"gpt2_optim: {meta['gpt2_optim']} with llm.c {meta.get('llmc')}, built "
                     f"with `{meta.get('gpt2_optim_build')}`; its rows are timed by its own "
                     f"program (its Token per second lines), warm-up {meta.get('warmup')}, median "
                     f"of {meta.get('repeat')} runs")
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
    """The views of the bench's store: results.csv (the rows), results.json ({"meta": ...,
    "rows": [...]}) and table.txt, each replaced atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json",
             "table": out_dir / "table.txt", "jsonl": out_dir / "results.jsonl",
             "plot": out_dir / PLOT}
    atomic_write_text(paths["csv"], render(df, "csv"))
    atomic_write_text(paths["json"], render(df, "json", meta=meta))
    atomic_write_text(paths["table"], table + "\n")
    return paths
