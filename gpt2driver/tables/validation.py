"""The printed result of ``gpt2driver validate``: the per-variant summary, then each variant's
worst steps by max |diff|."""

from __future__ import annotations

from ..protocol import vsteps_frame
from .printers import grid

SUMMARY_KEYS = ["variant", "steps", "rows", "max_abs", "rmse", "match_frac", "tol_max_abs",
                "tol_rmse", "tol_match", "result"]
STEP_KEYS = ("variant", "step", "pos", "row", "max_abs", "rmse", "ref_tok", "test_tok", "match")


def validation_report(res, worst: int = 5) -> str:
    parts = [grid([[s.get(k) for k in SUMMARY_KEYS] for s in res.vsummary], SUMMARY_KEYS)]
    df = vsteps_frame(res)
    if worst and not df.empty and "max_abs" in df:
        cols = [c for c in STEP_KEYS if c in df]
        for variant, grp in df.groupby("variant", sort=False):
            top = grp.sort_values("max_abs", ascending=False).head(worst)
            parts.append(f"\nworst steps of {variant}:")
            parts.append(grid(top[cols].values.tolist(), cols))
    return "\n".join(parts)
