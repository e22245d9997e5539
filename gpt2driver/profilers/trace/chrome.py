"""The timeline as a Chrome trace (Trace Event Format, JSON object form) for https://ui.perfetto.dev or
chrome://tracing: a track per stream (overlapping kernels, as PDL makes them, on extra lanes), the NVTX
ranges on the CPU and their kernels' span on the GPU, a track per stamped stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

from .frames import assign_lanes, kernel_table
from .model import Timeline


def _us(ns: int) -> float:
    return round(ns / 1e3, 3)


def chrome_trace(tl: Timeline) -> Dict[str, object]:
    """The timeline as a Chrome trace (Trace Event Format, JSON object form): complete events
    (ph X, ts and dur in microseconds) on one track per stream lane, NVTX ranges (CPU) and their
    kernels' span (GPU), one track per stamped stage; metadata events name and order the tracks."""
    cfg = tl.result.config
    gpu, cpu = 1, 2
    events: List[Dict[str, object]] = []
    tracks: List[Tuple[int, int, str]] = []  # (pid, tid, name) in display order

    def track(pid: int, name: str) -> int:
        tid = len(tracks) + 1
        tracks.append((pid, tid, name))
        return tid

    def add(pid, tid, name, cat, start, end, args):
        events.append({"name": name, "cat": cat, "ph": "X", "ts": _us(start), "dur": _us(max(end - start, 0)),
                       "pid": pid, "tid": tid, "args": args})

    # kernels: a track per stream, overlapping kernels (PDL) on the stream's extra lanes
    gaps = {(r.step, r.idx): r.gap_us for r in kernel_table(tl).itertuples()}
    for stream in sorted({k.stream for k in tl.kernels}):
        ks = sorted((k for k in tl.kernels if k.stream == stream), key=lambda k: (k.start, k.idx))
        lanes = assign_lanes([(k.start, k.end) for k in ks])
        tids = [track(gpu, f"stream {stream}" + (f" (overlap {n})" if n else "")) for n in range(max(lanes) + 1)]
        for k, lane in zip(ks, lanes):
            add(gpu, tids[lane], k.label, "kernel", k.start, k.end,
                {"kernel": k.demangled, "stage": k.stage, "layer": k.layer, "step": k.step, "idx": k.idx,
                 "gap_before_us": gaps.get((k.step, k.idx)), "grid": k.grid, "block": k.block,
                 "correlation": k.corr, "graph_node": k.node})
    # the NVTX ranges' kernels on the GPU: a track per range depth (MEASURE, layer, stage)
    spans = [r for r in tl.ranges if r.gpu_start is not None and r.gpu_end is not None]
    for depth in sorted({r.depth for r in spans}):
        rs = sorted((r for r in spans if r.depth == depth), key=lambda r: (r.gpu_start, r.step))
        lanes = assign_lanes([(r.gpu_start, r.gpu_end) for r in rs])
        what = ("step", "layer", "stage")[min(depth, 2)] if depth < 3 else f"depth {depth}"
        tids = [track(gpu, f"NVTX on the GPU: {what}" + (f" ({n + 1})" if n else "")) for n in range(max(lanes) + 1)]
        for r, lane in zip(rs, lanes):
            add(gpu, tids[lane], r.name, "nvtx-gpu", r.gpu_start, r.gpu_end,
                {"step": r.step, "kernels": r.kernels, "cpu_start_us": _us(r.start), "cpu_end_us": _us(r.end)})
    # stage stamps: a track per stage name, inside their kernels' boxes
    stamps = [(st, x) for st in tl.stamped for x in st.stamps]
    for name in dict.fromkeys(x.name for _, x in stamps):
        xs = sorted(((st, x) for st, x in stamps if x.name == name), key=lambda p: p[1].start)
        lanes = assign_lanes([(x.start, x.end) for _, x in xs])
        tids = [track(gpu, f"stage stamps: {name}" + (f" ({n + 1})" if n else "")) for n in range(max(lanes) + 1)]
        for (st, x), lane in zip(xs, lanes):
            add(gpu, tids[lane], f"{st.label}: {name}", "stamp", x.start, x.end,
                {"label": st.label, "step": st.step, "kernel_idx": st.idx, "union_us": x.union_ns / 1e3,
                 "mean_us_per_block": x.mean_ns / 1e3, "blocks": x.blocks})
    # the NVTX ranges' CPU times: one track, nested as pushed
    if tl.ranges:
        tid = track(cpu, "NVTX ranges (CPU)")
        for r in sorted(tl.ranges, key=lambda r: (r.start, -r.end)):
            add(cpu, tid, r.name, "nvtx", r.start, r.end,
                {"step": r.step, "depth": r.depth, "kernels": r.kernels, "launched": r.launched})
    meta: List[Dict[str, object]] = [
        {"name": "process_name", "ph": "M", "pid": gpu, "tid": 0,
         "args": {"name": f"GPU: {cfg.get('device', '?')}"}},
        {"name": "process_sort_index", "ph": "M", "pid": gpu, "tid": 0, "args": {"sort_index": 0}},
        {"name": "process_name", "ph": "M", "pid": cpu, "tid": 0, "args": {"name": "CPU: profile"}},
        {"name": "process_sort_index", "ph": "M", "pid": cpu, "tid": 0, "args": {"sort_index": 1}}]
    for pid, tid, name in tracks:
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    events.sort(key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    other = {"variant": cfg.get("variant"), "B": cfg.get("B"), "device": cfg.get("device"),
             "origin_ns": tl.info.get("origin_ns"), "cupti": tl.info.get("cupti"), "steps": tl.steps}
    return {"traceEvents": meta + events, "displayTimeUnit": "ns", "otherData": other}


def write_chrome_trace(tl: Timeline, path: Path) -> Path:
    Path(path).write_text(json.dumps(chrome_trace(tl)), encoding="utf-8")
    return Path(path)
