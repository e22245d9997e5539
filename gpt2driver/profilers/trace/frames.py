"""The timeline as tables (pandas): per kernel, per step, per stamped stage; and the lanes that keep
overlapping intervals apart on a track (the Chrome trace and the PNG)."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

from .model import Timeline


def covered(intervals: Sequence[Tuple[int, int]]) -> int:
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


def assign_lanes(items: Sequence[Tuple[int, int]]) -> List[int]:
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
        busy = covered([(max(k.start, begin), k.end) for k in ks if k.end > begin])
        rows.append({"step": s, "kernels": len(ks), "launched": launched.get(s), "step_us": step_ns / 1e3,
                     "kernel_us": kernel_ns / 1e3, "gap_us": (step_ns - kernel_ns) / 1e3,
                     "idle_us": (step_ns - busy) / 1e3, "idle_pct": 100.0 * (step_ns - busy) / step_ns
                     if step_ns > 0 else math.nan, "overlap_us": (kernel_ns - busy) / 1e3})
    return pd.DataFrame.from_records(rows)


def stamp_table(tl: Timeline):
    """One row per stamped stage: slot label kernel (its index in the step) stage start_us end_us
    (the blocks' first start and last end, from the kernel's start) union_us (time any block was in
    it) mean_us (per block) blocks, and sum_pct: the time any block was in any stamped stage (covered_ns) over
    the kernel's CUPTI duration; from captures without covered_ns, the stage unions summed."""
    import pandas as pd

    rows = []
    for st in tl.stamped:
        k = next((k for k in tl.step_kernels(st.step) if k.idx == st.idx), None)
        total = st.covered_ns if st.covered_ns is not None else sum(x.union_ns for x in st.stamps)
        for x in st.stamps:
            rows.append({"slot": st.slot, "label": st.label, "step": st.step, "idx": st.idx,
                         "kernel": k.label if k else "", "stage": x.name,
                         "start_us": (x.start - k.start) / 1e3 if k else math.nan,
                         "end_us": (x.end - k.start) / 1e3 if k else math.nan, "union_us": x.union_ns / 1e3,
                         "mean_us": x.mean_ns / 1e3, "blocks": x.blocks,
                         "kernel_us": k.dur / 1e3 if k else math.nan,
                         "sum_pct": 100.0 * total / k.dur if k and k.dur > 0 else math.nan})
    return pd.DataFrame.from_records(rows)


def stage_budget(tl: Timeline):
    """The link budget of the stamped kernels of the last step, one row per label (qkv, attproj, ..., in
    step order): launches, each stage's time per block (the median over the launches of their mean per
    block, us) and tail_us, the median time from the kernel's last stamp to its CUPTI end (the grid's
    completion, which no stamp can see). Empty without stamps."""
    import pandas as pd

    st = stamp_table(tl)
    if not len(st):
        return pd.DataFrame()
    st = st.assign(tail_us=st["kernel_us"] - st.groupby("slot")["end_us"].transform("max"))
    order = list(dict.fromkeys(st["label"]))
    stages = list(dict.fromkeys(st["stage"]))
    rows = []
    for label in order:
        part = st[st["label"] == label]
        row = {"label": label, "launches": part["slot"].nunique()}
        for stage in stages:
            per = part[part["stage"] == stage]["mean_us"]
            row[f"{stage}_us"] = float(per.median()) if len(per) else math.nan
        row["tail_us"] = float(part.groupby("slot")["tail_us"].first().median())
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def link_table(tl: Timeline):
    """What each stage adds to the step's chain, one row per stage in step order: kernels per step, the
    median kernel duration, and link_us, the median time from the end of the kernel before it (in the same
    step; the step's begin for the first) to its own end: under programmatic dependent launch a kernel is
    resident long before its turn, so its duration overstates what it costs the step and link_us does not."""
    import pandas as pd

    kt = kernel_table(tl)
    if not len(kt):
        return pd.DataFrame()
    kt = kt.sort_values(["step", "idx"])
    kt = kt.assign(link_us=kt["end_us"] - kt.groupby("step")["end_us"].shift(1).fillna(0.0))
    rows = []
    for stage in dict.fromkeys(kt["stage"]):
        part = kt[kt["stage"] == stage]
        rows.append({"stage": stage, "per_step": len(part) / max(1, kt["step"].nunique()),
                     "dur_us": float(part["dur_us"].median()), "link_us": float(part["link_us"].median()),
                     "step_share": float(part["link_us"].sum() / kt["link_us"].sum())})
    return pd.DataFrame.from_records(rows)
