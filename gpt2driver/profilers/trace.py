"""``gpt2driver profile --tool trace``: the decode step's kernels on a timeline, without Nsight Systems.

The profile executable's ``--trace --stamps`` (docs/protocol.md, "Trace records") records every kernel of
the measured steps through CUPTI (loaded at run time), the NVTX ranges' CPU times and the fused kernels'
in-kernel stage stamps, and prints them as ``##GPT2D`` records. Here, in plain functions:

- :func:`parse_trace`: the records -> a :class:`Timeline` (kernels, ranges, stamped kernels; ns from the
  trace's origin);
- :func:`kernel_table` / :func:`step_totals` / :func:`stamp_table`: per kernel (stage, start offset,
  duration, gap before it), per step (step time = kernel time + gaps, idle time, % idle) and per stamped
  stage;
- :func:`checks`: kernels per step against the launches, the traced step against the untraced one, the
  stamps against their kernel's duration (5 %);
- :func:`chrome_trace`: Chrome trace JSON (Perfetto, chrome://tracing): a track per stream (overlapping
  kernels, as PDL makes them, on extra lanes), the NVTX ranges on the CPU and their kernels' span on the GPU,
  a track per stamped stage;
- :func:`plot_step`: a PNG of one step (matplotlib, optional);
- :func:`run_trace`: runs the executable and writes all of it into a results folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..engine.runner import communicate_group, spawn_group, tail
from ..errors import ProfilingError, RunError
from ..protocol import RunResult, parse_line, parse_output
from .common import ProfileReport, ToolRun, check_run
from .tables import short_kernel_name

TRACE_FLAGS = ("--trace", "--stamps")  # added to the profile executable's arguments
CUPTI_DIR_ENV = "GPT2D_CUPTI_DIR"  # where the executable looks for libcupti after the toolkit
TOLERANCE = 0.05  # the checks' relative tolerance
NAME_WIDTH = 48


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@dataclass
class Kernel:
    step: int
    idx: int
    name: str  # mangled, as CUPTI gives it
    stream: int
    start: int  # ns from the trace's origin
    end: int
    stage: str = ""
    layer: str = ""
    corr: int = 0
    node: int = 0
    grid: str = ""
    block: str = ""
    demangled: str = ""
    label: str = ""  # demangled and shortened

    @property
    def dur(self) -> int:
        return self.end - self.start


@dataclass
class Range:
    step: int
    name: str
    depth: int
    start: int  # CPU time, ns from the origin
    end: int
    kernels: int = 0
    gpu_start: Optional[int] = None  # its kernels' first start and last end on the GPU
    gpu_end: Optional[int] = None
    launched: Optional[int] = None  # MEASURE only: kernels the step launched


@dataclass
class Stamp:
    stage: int
    name: str
    start: int
    end: int
    union_ns: int
    mean_ns: float
    blocks: int


@dataclass
class Stamped:
    slot: int
    step: int
    idx: int  # the kernel's index in its step (-1: not found)
    label: str
    kernel: str
    stages: List[str]
    blocks: int
    stamps: List[Stamp] = field(default_factory=list)


@dataclass
class Timeline:
    info: Dict[str, object]  # the trace record
    check: Dict[str, object]  # the executable's own tracecheck record
    kernels: List[Kernel]
    ranges: List[Range]
    stamped: List[Stamped]
    result: RunResult = field(default_factory=RunResult)

    @property
    def steps(self) -> int:
        return int(self.info.get("steps") or 0)

    def step_kernels(self, step: int) -> List[Kernel]:
        return [k for k in self.kernels if k.step == step]

    def step_begin(self, step: int) -> int:
        """Where the step's time begins: the end of the kernel before its first one (the previous
        step's last kernel, or the traced warm-up's for step 0)."""
        if step > 0:
            before = self.step_kernels(step - 1)
            if before:
                return before[-1].end
        prev = self.info.get("prev_end")
        if isinstance(prev, int):
            return prev
        own = self.step_kernels(step)
        return own[0].start if own else 0

    @property
    def untraced_step_us(self) -> Optional[float]:
        ms = self.info.get("untraced_step_ms", self.result.profile.get("step_ms"))
        return float(ms) * 1e3 if isinstance(ms, (int, float)) and ms > 0 else None


def _int(value, default: int = 0) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def parse_trace(text: str) -> Timeline:
    """The trace records of a ``profile --trace`` output -> a Timeline (kernels in step order, names
    demangled). ProfilingError when it holds no trace or no kernel of a measured step."""
    info: Dict[str, object] = {}
    check: Dict[str, object] = {}
    kernels: List[Kernel] = []
    ranges: List[Range] = []
    stamped: Dict[int, Stamped] = {}
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        rec, f = parsed
        if rec == "trace":
            info = f
        elif rec == "tracecheck":
            check = f
        elif rec == "kernel":
            kernels.append(Kernel(step=_int(f.get("step")), idx=_int(f.get("idx")), name=str(f.get("name", "")),
                                  stream=_int(f.get("stream")), start=_int(f.get("start")),
                                  end=_int(f.get("end")), stage=str(f.get("stage", "")),
                                  layer=str(f.get("layer", "")), corr=_int(f.get("corr")),
                                  node=_int(f.get("node")), grid=str(f.get("grid", "")),
                                  block=str(f.get("block", ""))))
        elif rec == "range":
            ranges.append(Range(step=_int(f.get("step")), name=str(f.get("name", "")), depth=_int(f.get("depth")),
                                start=_int(f.get("start")), end=_int(f.get("end")),
                                kernels=_int(f.get("kernels")),
                                gpu_start=f.get("gpu_start") if "gpu_start" in f else None,
                                gpu_end=f.get("gpu_end") if "gpu_end" in f else None,
                                launched=f.get("launched") if "launched" in f else None))
        elif rec == "stampdef":
            slot = _int(f.get("slot"))
            stamped[slot] = Stamped(slot=slot, step=_int(f.get("step")), idx=_int(f.get("idx"), -1),
                                    label=str(f.get("label", "")), kernel=str(f.get("kernel", "")),
                                    stages=[s for s in str(f.get("stages", "")).split(",") if s],
                                    blocks=_int(f.get("blocks")))
        elif rec == "stamp" and _int(f.get("slot"), -1) in stamped:
            stamped[_int(f.get("slot"))].stamps.append(
                Stamp(stage=_int(f.get("stage")), name=str(f.get("name", "")), start=_int(f.get("start")),
                      end=_int(f.get("end")), union_ns=_int(f.get("union_ns")),
                      mean_ns=float(f.get("mean_ns") or 0.0), blocks=_int(f.get("blocks"))))
    if not info:
        raise ProfilingError("the profile executable printed no trace records: rebuild it (gpt2driver build) "
                             "so that it takes --trace")
    if not kernels:
        raise ProfilingError(
            f"the trace holds no kernel of a measured step (CUPTI delivered {info.get('kernels', 0)} kernels and "
            f"{info.get('launch_calls', 0)} launch calls, {info.get('dropped', 0)} records dropped, "
            f"{info.get('steps', 0)} MEASURE ranges): check that --steps >= 1 and that CUPTI may trace here")
    kernels.sort(key=lambda k: (k.step, k.idx))
    names = demangle(sorted({k.name for k in kernels}))
    for k in kernels:
        k.demangled = names.get(k.name, k.name)
        k.label = display_name(k.demangled)
    res = parse_output(text, require_done=False)
    return Timeline(info, check, kernels, ranges, [stamped[s] for s in sorted(stamped)], res)


# ------------------------------------------------------------------------------------------------
# Kernel names
# ------------------------------------------------------------------------------------------------


def demangle_lite(name: str) -> str:
    """A mangled C++ name's scope and name, templates as '<…>', no arguments:
    '_ZN2gd12_GLOBAL__N_1L5k_fooILi1EEEvPf' -> 'gd::(anonymous namespace)::k_foo<…>'.
    Names it cannot read (extern "C" names such as cuBLAS's) come back unchanged."""
    if not name.startswith("_Z"):
        return name
    s, i = name, 2
    parts: List[str] = []
    templated = False
    nested = i < len(s) and s[i] == "N"
    if nested:
        i += 1
        while i < len(s) and s[i] in "KVrRO":  # cv- and ref-qualifiers of a member function
            i += 1
    while i < len(s):
        c = s[i]
        if c == "L":  # internal linkage
            i += 1
        elif c.isdigit():
            j = i
            while j < len(s) and s[j].isdigit():
                j += 1
            n = int(s[i:j])
            ident = s[j:j + n]
            if len(ident) < n:
                return name
            parts.append("(anonymous namespace)" if ident.startswith("_GLOBAL__N") else ident)
            i = j + n
            if not nested:
                templated = i < len(s) and s[i] == "I"
                break
        elif s.startswith("St", i):
            parts.append("std")
            i += 2
        else:
            templated = c == "I"
            break
    return "::".join(parts) + ("<…>" if templated else "") if parts else name


def demangle(names: Iterable[str]) -> Dict[str, str]:
    """mangled -> demangled, with c++filt when it is installed (one call for all), else
    demangle_lite."""
    names = list(names)
    out = {n: n for n in names}
    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled:
        return out
    tool = shutil.which("c++filt")
    if tool:
        try:
            proc = subprocess.run([tool], input="\n".join(mangled) + "\n", capture_output=True, text=True,
                                  timeout=60)
            lines = proc.stdout.splitlines()
            if proc.returncode == 0 and len(lines) == len(mangled):
                out.update(zip(mangled, lines))
                return out
        except (OSError, subprocess.TimeoutExpired):
            pass
    out.update((n, demangle_lite(n)) for n in mangled)
    return out


_TYPE_SHORT = (("__nv_bfloat16", "bf16"), ("__half", "half"))


def display_name(demangled: str, width: int = NAME_WIDTH) -> str:
    """A demangled name as shown on the timeline: no return type, scope or arguments, short type
    names, at most ``width`` characters."""
    text = short_kernel_name(demangled.replace("(anonymous namespace)::", ""))
    for long, short in _TYPE_SHORT:
        text = text.replace(long, short)
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def _covered(intervals: Sequence[Tuple[int, int]]) -> int:
    """Length of the union of [start, end) intervals."""
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0)


def kernel_table(tl: Timeline):
    """One row per kernel of every measured step: step idx name stage layer start_us (from the
    step's begin) dur_us gap_us (from the end of the kernel before it; negative: it started while
    that one ran, as programmatic dependent launch lets it) end_us, and the full name."""
    import pandas as pd

    rows = []
    for s in range(tl.steps):
        begin = tl.step_begin(s)
        prev = begin
        for k in tl.step_kernels(s):
            rows.append({"step": s, "idx": k.idx, "name": k.label, "stage": k.stage or "(none)",
                         "layer": k.layer, "start_us": (k.start - begin) / 1e3, "dur_us": k.dur / 1e3,
                         "gap_us": (k.start - prev) / 1e3, "end_us": (k.end - begin) / 1e3, "grid": k.grid,
                         "block": k.block, "kernel": k.demangled})
            prev = k.end
    return pd.DataFrame.from_records(rows)


def step_totals(tl: Timeline):
    """One row per measured step: kernels, launched, step_us (from the end of the kernel before
    the step to the end of its last kernel) = kernel_us + gap_us; idle_us (no kernel running),
    idle_pct, overlap_us (kernels running at once)."""
    import pandas as pd

    launched = {r.step: r.launched for r in tl.ranges if r.depth == 0 and r.launched is not None}
    rows = []
    for s in range(tl.steps):
        ks = tl.step_kernels(s)
        if not ks:
            rows.append({"step": s, "kernels": 0, "launched": launched.get(s)})
            continue
        begin = tl.step_begin(s)
        step_ns = ks[-1].end - begin
        kernel_ns = sum(k.dur for k in ks)
        busy = _covered([(max(k.start, begin), k.end) for k in ks if k.end > begin])
        rows.append({"step": s, "kernels": len(ks), "launched": launched.get(s), "step_us": step_ns / 1e3,
                     "kernel_us": kernel_ns / 1e3, "gap_us": (step_ns - kernel_ns) / 1e3,
                     "idle_us": (step_ns - busy) / 1e3, "idle_pct": 100.0 * (step_ns - busy) / step_ns
                     if step_ns > 0 else math.nan, "overlap_us": (kernel_ns - busy) / 1e3})
    return pd.DataFrame.from_records(rows)


def stamp_table(tl: Timeline):
    """One row per stamped stage: slot label kernel (its index in the step) stage start_us end_us
    (the blocks' first start and last end, from the kernel's start) union_us (time any block was in
    it) mean_us (per block) blocks, and sum_pct: the kernel's stage unions over its CUPTI duration."""
    import pandas as pd

    rows = []
    for st in tl.stamped:
        k = next((k for k in tl.step_kernels(st.step) if k.idx == st.idx), None)
        total = sum(x.union_ns for x in st.stamps)
        for x in st.stamps:
            rows.append({"slot": st.slot, "label": st.label, "step": st.step, "idx": st.idx,
                         "kernel": k.label if k else "", "stage": x.name,
                         "start_us": (x.start - k.start) / 1e3 if k else math.nan,
                         "end_us": (x.end - k.start) / 1e3 if k else math.nan, "union_us": x.union_ns / 1e3,
                         "mean_us": x.mean_ns / 1e3, "blocks": x.blocks,
                         "kernel_us": k.dur / 1e3 if k else math.nan,
                         "sum_pct": 100.0 * total / k.dur if k and k.dur > 0 else math.nan})
    return pd.DataFrame.from_records(rows)


@dataclass
class Check:
    name: str
    ok: bool
    text: str


def checks(tl: Timeline, tolerance: float = TOLERANCE) -> List[Check]:
    """The trace's self-checks: kernels per step = the launches (no kernel without its launch), the
    traced step (kernel time + gaps) = the untraced step within ``tolerance``, and every stamped
    kernel's stage unions = its CUPTI duration within ``tolerance``."""
    out = []
    tot = step_totals(tl)
    seen = sorted(set(tot["kernels"].dropna().astype(int))) if len(tot) else []
    want = sorted({int(v) for v in tot["launched"].dropna()}) if "launched" in tot else []
    lost = _int(tl.info.get("unassigned")) + _int(tl.info.get("dropped"))
    ok = bool(seen) and seen == want and len(seen) == 1 and lost == 0
    out.append(Check("kernels", ok, f"kernels per step: {_span(seen)} seen, {_span(want)} launched"
                     + (f", {lost} kernel records without their launch or dropped" if lost else "")))
    untraced = tl.untraced_step_us
    if "step_us" in tot and tot["step_us"].notna().any() and untraced:
        traced = float(tot["step_us"].mean())
        dev = traced / untraced - 1.0
        out.append(Check("step", abs(dev) <= tolerance,
                         f"step time: {traced:.2f} us traced (kernels {tot['kernel_us'].mean():.2f} + gaps "
                         f"{tot['gap_us'].mean():.2f}) vs {untraced:.2f} us untraced: {100 * dev:+.1f}%"))
    else:
        out.append(Check("step", False, "step time: no untraced step time or no traced step to compare"))
    if tl.stamped:
        st = stamp_table(tl)
        per = st.groupby("slot")["sum_pct"].first() if len(st) else st
        bad = int(((per - 100.0).abs() > 100 * tolerance).sum()) + int(per.isna().sum()) if len(per) else 0
        ok = len(per) > 0 and bad == 0
        text = (f"stage stamps: {len(per)} kernels, stage unions {per.min():.1f}..{per.max():.1f}% of their "
                f"durations" if len(per) else "stage stamps: none matched a kernel")
        out.append(Check("stamps", ok, text + (f", {bad} off by more than {100 * tolerance:.0f}%" if bad else "")))
    return out


def _span(values: Sequence[int]) -> str:
    if not values:
        return "none"
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}"


# ------------------------------------------------------------------------------------------------
# Chrome trace
# ------------------------------------------------------------------------------------------------


def _lanes(items: Sequence[Tuple[int, int]]) -> List[int]:
    """A lane per interval such that intervals of one lane never overlap (first lane that is free)."""
    ends: List[int] = []
    out = []
    for s, e in items:
        for i, last in enumerate(ends):
            if last <= s:
                ends[i] = e
                out.append(i)
                break
        else:
            ends.append(e)
            out.append(len(ends) - 1)
    return out


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
        lanes = _lanes([(k.start, k.end) for k in ks])
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
        lanes = _lanes([(r.gpu_start, r.gpu_end) for r in rs])
        what = ("step", "layer", "stage")[min(depth, 2)] if depth < 3 else f"depth {depth}"
        tids = [track(gpu, f"NVTX on the GPU: {what}" + (f" ({n + 1})" if n else "")) for n in range(max(lanes) + 1)]
        for r, lane in zip(rs, lanes):
            add(gpu, tids[lane], r.name, "nvtx-gpu", r.gpu_start, r.gpu_end,
                {"step": r.step, "kernels": r.kernels, "cpu_start_us": _us(r.start), "cpu_end_us": _us(r.end)})
    # stage stamps: a track per stage name, inside their kernels' boxes
    stamps = [(st, x) for st in tl.stamped for x in st.stamps]
    for name in dict.fromkeys(x.name for _, x in stamps):
        xs = sorted(((st, x) for st, x in stamps if x.name == name), key=lambda p: p[1].start)
        lanes = _lanes([(x.start, x.end) for _, x in xs])
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


# ------------------------------------------------------------------------------------------------
# PNG of one step
# ------------------------------------------------------------------------------------------------

STAGE_COLORS = {"embedding": "#7f7f7f", "ln1": "#bcbd22", "qkv": "#1f77b4", "attn": "#ff7f0e",
                "attproj": "#2ca02c", "ln2": "#dbdb8d", "fc": "#d62728", "fcproj": "#9467bd", "lnf": "#c7c7c7",
                "logits": "#8c564b", "sample": "#e377c2", "(none)": "#17becf"}
STAMP_COLORS = {"prologue": "#aec7e8", "wait": "#dddddd", "input": "#ffbb78", "mma": "#1f77b4",
                "epilogue": "#98df8a", "argmax": "#c5b0d5"}


def plot_step(tl: Timeline, path: Path, step: Optional[int] = None) -> Optional[str]:
    """One step's kernels as boxes coloured by stage on their stream's lanes (gaps are the white
    between them), the stamped stages below, time in microseconds from the step's begin. Default:
    the last step (the one the stamps belong to). Returns why there is no PNG (matplotlib missing),
    else None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return "no PNG: matplotlib is not installed (pip install matplotlib)"
    step = tl.steps - 1 if step is None else step
    ks = tl.step_kernels(step)
    begin = tl.step_begin(step)
    tot = step_totals(tl)
    row = tot[tot["step"] == step].iloc[0] if len(tot) and (tot["step"] == step).any() else None
    lanes = _lanes([(k.start, k.end) for k in ks])
    n_k = max(lanes) + 1 if lanes else 1
    stamp_names = list(dict.fromkeys(x.name for st in tl.stamped if st.step == step for x in st.stamps))
    rows = ["kernels" if not i else f"kernels (overlap {i})" for i in range(n_k)]
    rows += [f"stamps: {n}" for n in stamp_names]
    fig, ax = plt.subplots(figsize=(16, 1.4 + 0.42 * len(rows)))
    used = {}
    for k, lane in zip(ks, lanes):
        color = STAGE_COLORS.get(k.stage or "(none)", "#17becf")
        used[k.stage or "(none)"] = color
        ax.broken_barh([((k.start - begin) / 1e3, k.dur / 1e3)], (lane - 0.4, 0.8), facecolors=color,
                       edgecolors="black", linewidth=0.3)
    for st in tl.stamped:
        if st.step != step:
            continue
        for x in st.stamps:
            y = n_k + stamp_names.index(x.name)
            ax.broken_barh([((x.start - begin) / 1e3, (x.end - x.start) / 1e3)], (y - 0.4, 0.8),
                           facecolors=STAMP_COLORS.get(x.name, "#cccccc"), edgecolors="black", linewidth=0.2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.invert_yaxis()
    ax.set_xlabel("µs from the step's begin (the end of the kernel before it)")
    ax.set_xlim(0, max(((ks[-1].end - begin) / 1e3) if ks else 1.0, 1e-3) * 1.01)
    cfg = tl.result.config
    title = f"{cfg.get('variant', '?')} B={cfg.get('B', '?')} on {cfg.get('device', '?')}, step {step}"
    if row is not None and "step_us" in row and row["step_us"] == row["step_us"]:
        title += (f": {row['step_us']:.1f} µs = kernels {row['kernel_us']:.1f} + gaps {row['gap_us']:.1f} µs, "
                  f"GPU idle {row['idle_pct']:.1f}%")
    ax.set_title(title, fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="black", label=s) for s, c in used.items()]
    handles += [Patch(facecolor=STAMP_COLORS.get(n, "#cccccc"), edgecolor="black", label=f"stamp: {n}")
                for n in stamp_names]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
              ncol=1 + len(handles) // (2 * len(rows) + 2))
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------


def cupti_wheel_dir() -> Optional[Path]:
    """The folder of the nvidia-cuda-cupti wheel's libcupti, when that wheel is installed."""
    try:
        import nvidia  # namespace package of NVIDIA's pip wheels
    except ImportError:
        return None
    for base in list(getattr(nvidia, "__path__", [])):
        for sub in ("cu13/lib", "cuda_cupti/lib"):
            d = Path(base) / sub
            if any(d.glob("libcupti.so*")):
                return d
    return None


@dataclass
class TraceReport(ProfileReport):
    """run_trace's report: the common one (its table: kernel_table) and the timeline."""

    timeline: Optional[Timeline] = None


def summarize(tl: Timeline, top: int = 10, notes: Sequence[str] = ()) -> str:
    """The per-step totals, the checks, the kernels of the last step (the first ``top``; 0 = all) and
    ``notes``."""
    from tabulate import tabulate

    tot = step_totals(tl)
    lines = [f"trace: {tl.steps} measured steps{' (CUDA graph replays)' if tl.info.get('graph') else ''}, "
             f"CUPTI {tl.info.get('cupti', '?')} ({tl.info.get('lib', '?')})"]
    cols = [c for c in ("step", "kernels", "launched", "step_us", "kernel_us", "gap_us", "idle_us", "idle_pct",
                        "overlap_us") if c in tot]
    lines.append(tabulate(tot[cols].astype(object).values.tolist(), headers=cols, tablefmt="github",
                          floatfmt=".2f"))
    for c in checks(tl):
        lines.append(f"check {c.name}: {'OK' if c.ok else 'FAILED'}: {c.text}")
    kt = kernel_table(tl)
    last = kt[kt["step"] == tl.steps - 1]
    shown = last if not top else last.head(top)
    lines.append(f"step {tl.steps - 1}, kernels in order (start and gap in us; negative gap: started before "
                 f"the kernel before it ended):")
    kcols = ["idx", "name", "stage", "layer", "start_us", "dur_us", "gap_us"]
    lines.append(tabulate(shown[kcols].astype(object).values.tolist(), headers=kcols, tablefmt="github",
                          floatfmt=".2f"))
    if len(shown) < len(last):
        lines.append(f"... {len(last) - len(shown)} more kernels in kernels.csv")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def run_trace(binary: Path, args: Sequence[str], out_dir: Path, timeout: float) -> TraceReport:
    """Run the profile executable with ``args`` (the usual ones and TRACE_FLAGS) and keep, in ``out_dir``: the raw
    output (trace.stdout.txt), trace.json (Chrome trace), timeline.png, kernels.csv, steps.csv,
    stamps.csv. The report's table is kernels.csv's (one row per kernel of every step).

    RunError when the executable fails (no CUPTI, no GPU: its one-line reason), ProfilingError when
    the trace is empty."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), *map(str, args)]
    (out_dir / "trace.cmd.txt").write_text(shlex.join(cmd) + "\n")
    env = dict(os.environ)
    wheel = cupti_wheel_dir()
    if wheel and CUPTI_DIR_ENV not in env:
        env[CUPTI_DIR_ENV] = str(wheel)
    try:
        proc = spawn_group(cmd, env)
    except OSError as e:
        raise RunError(f"cannot start {binary}: {e.strerror or e}") from None
    out, err, timed_out = communicate_group(proc, timeout)
    (out_dir / "trace.stdout.txt").write_text(out)
    (out_dir / "trace.stderr.txt").write_text(err)
    if timed_out:
        raise RunError(f"{Path(binary).name} --trace timed out after {timeout:g} s and was killed (raise "
                       f"--timeout or lower --steps)", stderr_tail=tail(err))
    res = check_run("trace", ToolRun(cmd, proc.returncode, out, err))  # its one-line error, if it failed
    tl = parse_trace(out)
    write_chrome_trace(tl, out_dir / "trace.json")
    kt = kernel_table(tl)
    kt.to_csv(out_dir / "kernels.csv", index=False)
    tot = step_totals(tl)
    tot.to_csv(out_dir / "steps.csv", index=False)
    if tl.stamped:
        stamp_table(tl).to_csv(out_dir / "stamps.csv", index=False)
    why = plot_step(tl, out_dir / "timeline.png")
    step_us = float(tot["step_us"].mean()) if "step_us" in tot and len(tot) else None
    return TraceReport("trace", kt, tl.steps, out_dir, res, None, step_us, [cmd], [why] if why else [],
                       timeline=tl)
