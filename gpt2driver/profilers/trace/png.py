"""A PNG of one step of the timeline (matplotlib, optional): kernels coloured by stage on their stream's
lanes, the stamped stages below."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .frames import assign_lanes, step_totals
from .model import Timeline

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
    lanes = assign_lanes([(k.start, k.end) for k in ks])
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
