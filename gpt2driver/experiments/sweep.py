"""Run a sweep: every point of a config, resumable, results in results.{jsonl,csv,json}.

``results.jsonl`` is append-only (one line per finished point, fsynced); ``results.csv`` and
``results.json`` are rewritten from it atomically after every point. A rerun skips the points
already recorded as ok. The points run on an executor: one after the other on the default GPU,
one worker per local GPU (``gpus=[...]``), or a Slurm job array (``executor="slurm"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..engine import build as build_mod
from ..errors import BenchError, ExperimentError
from ..tables.plot import plot, plot_title
from ..tables.printers import render
from ..tables.views import ablation_table, curve_table, header_fields, point_label, sweep_table
from . import floor
from .configs import SweepConfig
from .executors.base import Executor, Log, stderr_log
from .executors.local import LocalGPUs
from .executors.serial import Serial
from .executors.slurm import Slurm
from .pointrunner import PointRunner
from .points import expand
from .store import ResultsStore, table_views
from .summary import frame

EXECUTORS = ("local", "slurm")


def ordered_rows(store: ResultsStore, order: Dict[str, int]) -> List[Dict[str, Any]]:
    """This config's rows in sweep order; grouped by GPU name when they come from several kinds
    of GPU (a cluster with mixed nodes)."""
    rows = [r for r in store.rows() if r["id"] in order]
    if len({r.get("gpu") for r in rows if r.get("gpu")}) > 1:
        return sorted(rows, key=lambda r: (r.get("gpu") is None, r.get("gpu") or "",
                                           order[r["id"]]))
    return sorted(rows, key=lambda r: order[r["id"]])


def make_executor(executor: str, gpus: Optional[List[int]], slurm, out_dir: Path,
                  name: str) -> Executor:
    if executor not in EXECUTORS:
        raise ExperimentError(f"unknown executor {executor!r} (local or slurm)")
    if gpus is not None and executor != "local":
        raise ExperimentError("--gpus is for the local executor; Slurm tasks get a GPU through "
                              "--gres")
    if executor == "slurm":
        return Slurm(out_dir, slurm, name)
    return LocalGPUs(gpus) if gpus is not None else Serial()


def copy_bandwidth(value: Union[None, float, str], log: Log) -> Optional[float]:
    """A config's copy_gbps: the number, or ``measure`` (torch; None with a note when it can't)."""
    if value != "measure":
        return value
    try:
        bw = floor.measure_copy_bandwidth()
    except BenchError as e:
        log(f"copy bandwidth not measured ({e}): no % of floor")
        return None
    log(f"device-to-device copy bandwidth: {bw['gbps']:.0f} GB/s ({floor.copy_source(bw)})")
    return bw["gbps"]


def report(df, out_dir: Path, fmt: str = "markdown", name: str = "sweep") -> None:
    """The end of a sweep on stdout: the table (and the ablation table when the sweep has
    ablations), the plot (titled with the config's name and the GPU), the files."""
    png = Path(out_dir) / "tokens_per_s.png"
    note = plot(df, png, plot_title(f"sweep {name}: tokens/s against B", df))
    if fmt != "markdown":
        print(render(df, fmt), end="")
        return
    print(sweep_table(df))
    if df["batch"].nunique() > 2:
        print("\ntokens/s against B:")
        print(curve_table(df))
    if not df.empty and (df["ablate"].fillna("none") != "none").any():
        print("\nablations (tokens/s of each switch off / all on):")
        print(ablation_table(df))
    print(note or f"plot: {png}")
    print(f"results: {Path(out_dir) / 'results.csv'} {Path(out_dir) / 'results.json'}")


def run_sweep(cfg: SweepConfig, out_dir: Path, cc: Optional[int] = None, dry_run: bool = False,
              log: Log = stderr_log, jobs: Optional[int] = None, gpus: Optional[List[int]] = None,
              executor: str = "local", slurm=None, bin_dir: Optional[Path] = None,
              fmt: str = "markdown"):
    """Run the sweep's missing points; return the summary DataFrame of this config's points.

    ``gpus``: run on these GPUs (nvidia-smi indices), one worker each, each point pinned to one
    GPU. ``executor="slurm"``: submit the missing points as a Slurm job array (``slurm``: a
    :class:`gpt2driver.experiments.executors.slurm_cmd.SlurmOptions`) and gather its results.
    Default: one point after the other on the default GPU. ``bin_dir``: executables of another
    build tree. ``fmt``: how the table is printed (markdown, csv, json, jsonl).
    """
    runs_on = make_executor(executor, gpus, slurm, Path(out_dir), cfg.name)
    points = expand(cfg)
    order = {p["id"]: k for k, p in enumerate(points)}  # the results dir may hold other points
    n = len(points)
    labels = {p["id"]: f"[{i}/{n}] {point_label(p, header_fields(points))}"
              for i, p in enumerate(points, 1)}
    if dry_run:
        done = ResultsStore(out_dir).ok_ids()
        for p in points:
            print(f"{labels[p['id']]}  id={p['id']}{'  (done)' if p['id'] in done else ''}")
        print(f"{n} points, {len(done & set(order))} already done; results in {out_dir}")
        return frame(ordered_rows(ResultsStore(out_dir), order))

    copy_gbps = copy_bandwidth(cfg.copy_gbps, log)

    def view(rows):
        return frame(rows, copy_gbps)

    store = ResultsStore(out_dir, table_views(Path(out_dir), view))
    if any(p["id"] not in store.ok_ids() for p in points):
        cc = build_mod.resolve_cc(cc or cfg.cc, ExperimentError)
    store.check_writable()
    runs_on.run(points, store, PointRunner(cc, cfg.timeout_s, jobs, bin_dir=bin_dir), labels, log)
    df = view(ordered_rows(store, order))
    report(df, Path(out_dir), fmt, cfg.name)
    return df
