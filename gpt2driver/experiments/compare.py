"""``gpt2driver compare``: a mini-sweep of one configuration (one batch size, prompt and length):
the variants side by side with their speedup over naive, or the optimized variant with its speed
tricks switched off one at a time (the ablations) as a ratio to all on. Nothing is stored: the
rows are printed and returned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import names, progress
from ..engine import build as build_mod
from ..tables.printers import render
from ..tables.views import ablation_table, sweep_table
from .configs import parse_config
from .executors.base import Log, stderr_log
from .pointrunner import PointRunner
from .points import expand
from .summary import frame


@dataclass
class CompareOptions:
    variants: Sequence[str] = names.VARIANTS
    batch: int = 1
    gen: int = 256
    prompt_len: int = 1
    warmup: int = 1
    repeat: int = 3
    precision: str = "bf16"
    checkpoint: Optional[str] = None
    cc: Optional[int] = None
    timeout: float = 600.0
    ablate: Sequence[str] = (names.ALL_ON,)
    bin_dir: Optional[str] = None
    engine_args: Sequence[str] = ()


def ablation_options(ablate: Sequence[str], every: bool) -> List[str]:
    """The ablation axis of a compare: all on, each switch off alone with ``every`` (the
    ablation preset), plus the given values (e.g. graph+pdl)."""
    values = names.every_ablation() if every else [names.ALL_ON]
    return list(dict.fromkeys(values + [names.ablation(a) for a in ablate]))


def compare_points(o: CompareOptions) -> List[Dict[str, Any]]:
    """The points of the comparison (ConfigError for a bad variant or a point too long)."""
    data = {"name": "compare", "precision": o.precision, "variants": list(o.variants),
            "batch": o.batch, "gen": o.gen, "prompt_len": o.prompt_len, "warmup": o.warmup,
            "repeat": o.repeat, "timeout_s": o.timeout, "ablate": list(o.ablate)}
    if o.checkpoint:
        data["checkpoint"] = o.checkpoint
    return expand(parse_config(data))


def run_compare(o: CompareOptions, log: Log = stderr_log):
    """Run the points one after the other; the DataFrame of their rows (with the ratios). The
    build and the model are prepared first: their failure stops the comparison."""
    points = compare_points(o)
    runner = PointRunner(build_mod.resolve_cc(o.cc), o.timeout,
                         bin_dir=Path(o.bin_dir) if o.bin_dir else None, extra_args=o.engine_args)
    runner.prepare(points[0]["precision"], points[0]["model"], points[0]["checkpoint"])
    rows = []
    with progress.bar("compare", len(points)) as shown:
        for i, p in enumerate(points, 1):
            what = " ".join([p["variant"], *names.ablation_flags(p["ablate"])])
            log(f"[{i}/{len(points)}] {what} ...")
            shown.describe(what)
            rows.append(runner.run(p))
            shown.advance()
    return frame(rows)


def compare_report(df, fmt: str = "markdown") -> str:
    """The table of a comparison: the ablation table when it has ablations, else the variants."""
    if fmt != "markdown":
        return render(df, fmt).rstrip("\n")
    if (df["ablate"] != names.ALL_ON).any():
        return ablation_table(df)
    return sweep_table(df)
