"""The plot: tokens/s against the batch size B (log2 axis; tokens/s on a log axis too when it spans more
than 10x), one line per variant, and beside it the % of the decode floor when the rows know it.
matplotlib is optional (``gpt2driver[plot]``)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Optional

from .. import names
from .rows import varying

NO_MATPLOTLIB = "matplotlib is not installed: no plot (pip install 'gpt2driver[plot]')"


def plot_title(what: str, df) -> str:
    """``<what> on <GPU>`` (the GPUs of the ok rows; several joined by commas)."""
    gpus = [] if df.empty or "gpu" not in df else sorted({g for g in df["gpu"].dropna() if g})
    return f"{what} on {', '.join(gpus)}" if gpus else what


def log_scale(values) -> bool:
    """Whether a panel's y axis is logarithmic: when its positive values span more than a factor of 10 (the
    tokens/s of B = 1 and B = 256 differ ~60x; on a linear axis the small batches lie flat on the floor)."""
    v = [float(x) for x in values if isinstance(x, numbers.Real) and x == x and x > 0]  # no None, NaN, <= 0
    return bool(v) and max(v) > 10 * min(v)


def plot(df, path: Path, title: Optional[str] = None) -> Optional[str]:
    """Write the plot of the ok rows to ``path`` (``title`` above it); a note instead of a plot
    when matplotlib is absent or nothing succeeded, None when written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return NO_MATPLOTLIB
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return "no successful points: no plot"
    ok = ok.copy()
    if "ablate" in ok:
        ok["ablate"] = ok["ablate"].fillna(names.ALL_ON)
    records = ok.to_dict("records")
    lines = ["variant"] + varying(records, ("ablate", "model", "precision", "gen", "prompt_len"))
    floor = "floor_pct" in ok and ok["floor_pct"].notna().any()
    fig, axes = plt.subplots(1, 2 if floor else 1, figsize=(12 if floor else 7, 4.5), squeeze=False)
    panels = [("tokens_per_s_median", "tokens/s (median)")]
    if floor:
        panels.append(("floor_pct", "% of the decode floor"))
    batches = sorted(ok["batch"].unique())
    for ax, (col, label) in zip(axes[0], panels):
        for key, grp in ok.groupby(lines, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            grp = grp.sort_values("batch")
            ax.plot(grp["batch"], grp[col], marker="o",
                    label=" ".join(str(x) for x in key if x != names.ALL_ON))
        ax.set_xscale("log", base=2)
        if log_scale(ok[col]):
            ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size B")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
