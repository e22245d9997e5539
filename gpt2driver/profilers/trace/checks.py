"""The trace's self-checks and its printed summary. Each check can fail: kernels per step against
the launches (and, for kernels placed without their launch call, against the launch order), the traced
step time against the untraced one, the stamped stages against their kernel's CUPTI duration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

from .frames import kernel_table, link_table, stage_budget, stamp_table, step_totals
from .model import Timeline, api_summary, as_int

TOLERANCE = 0.05  # the checks' relative tolerance

LAUNCHED_FROM = {"calls": "their launch calls", "label_calls": "the LABEL step's launch calls",
                 "label_kernels": "the LABEL step's kernels", "none": "nothing: no launch call, no LABEL kernel"}
ORDER_TEXT = {"graph-order": "graph replays in correlation-id order", "label-order": "the LABEL step's kernel "
              "count at a time, in correlation-id order"}


@dataclass
class Check:
    name: str
    ok: bool
    text: str


def span(values: Sequence[int]) -> str:
    """'none', '12' or '11..12'."""
    if not values:
        return "none"
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}"


def order_problems(tl: Timeline) -> List[str]:
    """What is off in kernels placed by launch order (none when they were placed by launch calls)."""
    info = tl.info
    if tl.order == "none":
        return []
    found, expected = as_int(info.get("order_found")), as_int(info.get("order_expected"))
    unit = "graph replays" if tl.order == "graph-order" else "kernels"
    out = []
    if found != expected:
        out.append(f"{found} {unit} after LABEL, {expected} expected")
    if as_int(info.get("order_mismatch")):
        out.append(f"{as_int(info.get('order_mismatch'))} steps unlike the LABEL step")
    if as_int(info.get("order_conflicts")):
        out.append(f"{as_int(info.get('order_conflicts'))} kernels start before their step began")
    return out


def kernels_check(tl: Timeline, tot) -> Check:
    seen = sorted(set(tot["kernels"].dropna().astype(int))) if len(tot) else []
    want = sorted({int(v) for v in tot["launched"].dropna()}) if "launched" in tot else []
    lost = as_int(tl.info.get("unassigned")) + as_int(tl.info.get("dropped"))
    problems = order_problems(tl)
    ok = bool(seen) and seen == want and len(seen) == 1 and seen[0] > 0 and lost == 0 and not problems
    source = LAUNCHED_FROM.get(str(tl.info.get("launched_from", "")))
    text = f"kernels per step: {span(seen)} seen, {span(want)} launched" + (f" (from {source})" if source else "")
    if lost:
        text += f", {lost} kernel records placed nowhere or dropped"
    if tl.order != "none":
        text += f"; placed by {ORDER_TEXT.get(tl.order, tl.order)}" + (f": {', '.join(problems)}" if problems else "")
    return Check("kernels", ok, text)


def checks(tl: Timeline, tolerance: float = TOLERANCE) -> List[Check]:
    """The trace's self-checks: kernels per step = the launches (no kernel lost, and the launch order
    consistent when it placed them), the traced step (kernel time + gaps) = the untraced step within
    ``tolerance``, and every stamped launch's stages cover its kernel's CUPTI duration within
    ``tolerance`` (the time any block was in a stamped stage; older captures: the stage unions summed)."""
    tot = step_totals(tl)
    out = [kernels_check(tl, tot)]
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
        unmatched = sum(1 for s in tl.stamped if s.idx < 0 or not s.stamps)
        missed = as_int(tl.info.get("stamp_missed"))
        bad = int(((per - 100.0).abs() > 100 * tolerance).sum()) + int(per.isna().sum()) if len(per) else 0
        ok = len(per) > 0 and bad == 0 and unmatched == 0 and missed == 0
        covered = all(s.covered_ns is not None for s in tl.stamped)
        what = "stages cover" if covered else "stage unions"
        text = (f"stage stamps: {len(per)} kernels, {what} {per.min():.1f}..{per.max():.1f}% of their "
                f"durations" if len(per) else "stage stamps: none matched a kernel")
        text += f", {bad} off by more than {100 * tolerance:.0f}%" if bad else ""
        text += f", {unmatched} stamped launches without their kernel's stamps" if unmatched else ""
        text += f", {missed} launches found no free stamp slot" if missed else ""
        out.append(Check("stamps", ok, text))
    return out


def placement_note(tl: Timeline) -> str:
    """How the executable placed the kernels in steps when CUPTI gave it no launch call for some; ''
    when every kernel had its launch call."""
    info = tl.info
    no_launch = as_int(info.get("no_launch"))
    if not no_launch:
        return ""
    parts = [f"{as_int(info.get('placed_launch'))} by their launch call"]
    if as_int(info.get("placed_sync")):
        parts.append(f"{as_int(info.get('placed_sync'))} by the synchronized LABEL step's times")
    if as_int(info.get("placed_order")):
        parts.append(f"{as_int(info.get('placed_order'))} by {ORDER_TEXT.get(tl.order, tl.order)}")
    api = api_summary(info)
    return (f"{no_launch} of {as_int(info.get('kernels'))} kernels came without their launch call; placed "
            + ", ".join(parts) + (f"; CUPTI delivered {api}" if api else ""))


def summarize(tl: Timeline, top: int = 10, notes: Sequence[str] = ()) -> str:
    """The per-step totals, the checks, the kernels of the last step (the first ``top``; 0 = all),
    how kernels were placed without their launch call, and ``notes``."""
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
    links = link_table(tl)
    lines.append("per stage: kernels per step, median duration, and link_us, the median from the end of the kernel "
                 "before it to its own end (what it adds to the step), us:")
    lines.append(tabulate(links.astype(object).values.tolist(), headers=list(links.columns), tablefmt="github",
                          floatfmt=".2f"))
    budget = stage_budget(tl)
    if len(budget):
        lines.append(f"step {tl.steps - 1}, stamped kernels: each stage's time per block and the tail after the last "
                     f"stamp (the grid's completion), median over their launches, us:")
        lines.append(tabulate(budget.astype(object).values.tolist(), headers=list(budget.columns),
                              tablefmt="github", floatfmt=".2f"))
    placed = placement_note(tl)
    lines += [f"note: {n}" for n in ([placed] if placed else []) + list(notes)]
    return "\n".join(lines)
