"""``gpt2driver bench``: our executables against their peers on the same weights, on one GPU.

One run measures, at each batch size B:

- naive, kvonly and optimized through the built executables, exactly as a sweep does (a
  :class:`~gpt2driver.experiments.pointrunner.PointRunner`: ``--warmup``, ``--repeat``, medians);
- with ``gpt2optim`` (and ``llmc``), gpt2_optim's naive and KV-cache rows from the user's own
  checkouts, timed by gpt2_optim's own program (:mod:`.gpt2optim`);
- where torch and transformers import and CUDA is available, Hugging Face's ``generate`` built
  from the same checkpoint, eager and compiled (:mod:`.hf`);
- the device-to-device copy bandwidth, against which each row's step time is put as a fraction of
  the decode floor (:mod:`gpt2driver.experiments.floor`).

The weights are the given checkpoint, or random weights of a GPT-2 size (``model``), made once.
Rows go to a results store (``results.jsonl``, resumable with the same ``out``); its views
(results.csv, results.json with the meta data, table.txt) are rewritten after every row, and the
plot (tokens/s and % of floor against B) is drawn at the end.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ... import names, progress
from ...engine import build as build_mod
from ...errors import BenchError, BuildError, first_line
from ...files import models
from ...files.checkpoint import read_header
from ...tables.plot import plot, plot_title
from ...tables.views import bench_table, curve_table
from ..configs import parse_config
from ..executors.base import Log, stderr_log
from ..floor import copy_source, mean_kv_positions, measure_copy_bandwidth
from ..pointrunner import PointRunner
from ..points import expand, point_id
from ..store import ResultsStore
from . import gpt2optim
from .hf import run_hf
from .report import format_header, results_dir, write_results
from .rows import PROMPT_LEN, engine_row, failed_row, summarize


@dataclass
class BenchOptions:
    batches: Sequence[int] = (1, 4, 16)
    gen: int = 512
    precision: str = "bf16"
    variants: Sequence[str] = names.VARIANTS
    checkpoint: Optional[str] = None
    model: str = names.DEFAULT_MODEL
    cc: Optional[int] = None
    warmup: int = 1
    repeat: int = 3
    hf: bool = True
    hf_compile: bool = True
    hf_warmup: int = 2
    copy_gbps: Optional[float] = None
    timeout: float = 600.0
    out: Optional[str] = None
    gpt2optim: Optional[str] = None
    llmc: Optional[str] = None


@dataclass
class BenchResult:
    df: Any
    meta: Dict[str, Any]
    table: str
    paths: Dict[str, Path]
    plot_note: Optional[str] = None


def parse_variants(text: str) -> List[str]:
    """Comma-separated engine variants, in the given order; ValueError for unknown ones."""
    return names.choices(names.VARIANTS, text)


def bench_points(opts: BenchOptions) -> List[Dict[str, Any]]:
    """The engine points, as a sweep config would expand them (batch, then variant)."""
    data = {"name": "bench", "precision": opts.precision, "variants": list(opts.variants),
            "batch": list(opts.batches), "gen": opts.gen, "prompt_len": PROMPT_LEN,
            "warmup": opts.warmup, "repeat": opts.repeat, "timeout_s": opts.timeout}
    if opts.checkpoint:
        data["checkpoint"] = str(opts.checkpoint)
    else:
        data["model"] = opts.model
    return expand(parse_config(data))


def peer_points(template: Dict[str, Any], variant: str, batches: Sequence[int],
                **fields: Any) -> List[Dict[str, Any]]:
    """The points of a peer variant at each batch size (the engine's point fields otherwise)."""
    out = []
    for b in batches:
        p = {**template, "variant": variant, "batch": b, **fields}
        p.pop("id", None)
        out.append({"id": point_id(p), **p})
    return out


def bench_tokenizer() -> Optional[Path]:
    """The tokenizer file handed to gpt2_optim: $GPT2DRIVER_TOKENIZER when set (its program
    only prints text with it)."""
    path = os.environ.get("GPT2DRIVER_TOKENIZER")
    return Path(path) if path and Path(path).is_file() else None


class Bench:
    """One bench run: its points, its store and meta data, and the parts that make rows."""

    def __init__(self, opts: BenchOptions, log: Log):
        self.opts, self.log = opts, log
        self.points = bench_points(opts)  # ConfigError when prompt + gen exceed the context
        if opts.checkpoint:
            self.checkpoint = Path(opts.checkpoint)
            self.cfg = read_header(self.checkpoint)[0]  # CheckpointError: its own message
        else:
            self.checkpoint = models.resolve_model(opts.model, opts.precision)  # made once
            self.cfg = models.model_config(self.checkpoint, opts.model)
        self.trees = gpt2optim.find_trees(opts.gpt2optim, opts.llmc) if opts.gpt2optim else None
        batches, first = list(opts.batches), self.points[0]
        hf_variants = names.HF_VARIANTS if opts.hf_compile else names.HF_VARIANTS[:1]
        self.hf_points = ([q for v in hf_variants for q in peer_points(
            first, v, batches, warmup=opts.hf_warmup, ablate=names.ALL_ON)] if opts.hf else [])
        self.g2o_points = ([q for v in names.GPT2OPTIM_VARIANTS for q in peer_points(
            first, v, batches, precision=gpt2optim.PRECISION)] if self.trees else [])
        self.plan = {p["id"]: p for p in self.points + self.hf_points + self.g2o_points}
        self.out_dir = Path(opts.out) if opts.out else results_dir()
        self.store = ResultsStore(self.out_dir, self.views)
        self.store.check_writable()
        self.done = self.store.ok_ids() & set(self.plan)
        self.recorded: List[str] = []
        self.shown = progress.Bar()  # the progress bar while run() runs
        self.cc, self.cc_reason = opts.cc, ""
        self.meta = self.first_meta()

    def first_meta(self) -> Dict[str, Any]:
        o, cfg = self.opts, self.cfg
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
            "cc": self.cc, "precision": str(o.precision).lower(), "gen": o.gen,
            "prompt_len": PROMPT_LEN, "batches": list(o.batches), "variants": list(o.variants),
            "warmup": o.warmup, "repeat": o.repeat, "hf": o.hf, "hf_warmup": o.hf_warmup,
            "checkpoint": str(self.checkpoint), "model_size": None if o.checkpoint else o.model,
            "model": {**cfg.as_dict(), "num_parameters": cfg.num_parameters},
            "weights_bytes": cfg.num_parameters * names.element_bytes(o.precision),
            "mean_kv_positions": mean_kv_positions(PROMPT_LEN, o.gen),
            "copy_gbps": None, "copy_source": None, "copy_note": None,
        }

    # -- the store's views --------------------------------------------------------------------

    def frame(self, rows: List[Dict[str, Any]]):
        return summarize([r for r in rows if r.get("id") in self.plan], self.cfg,
                         self.meta["copy_gbps"])

    def table(self, df) -> str:
        text = format_header(self.meta) + "\n\n" + bench_table(df)
        if len(set(self.opts.batches)) > 2:
            text += "\n\ntokens/s against B:\n" + curve_table(df)
        return text

    def views(self, rows: List[Dict[str, Any]], complete: bool = False):
        gpus = [r["gpu"] for r in rows if r.get("gpu") and r.get("id") in self.plan]
        for k in ("gpu", "finished", "complete"):  # kept last in the JSON
            self.meta.pop(k, None)
        self.meta["gpu"] = gpus[0] if gpus else None
        self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S") if complete else None
        self.meta["complete"] = complete
        df = self.frame(rows)
        table = self.table(df)
        return df, table, write_results(self.out_dir, df, self.meta, table)

    def record(self, row: Dict[str, Any]) -> None:
        """A new row: stamped with its point's fields, appended, the views rewritten."""
        point = next((p for p in self.plan.values() if p["variant"] == row["variant"]
                      and p["batch"] == row["batch"]), None)
        if point is not None:
            row = {**row, **{k: v for k, v in point.items() if row.get(k) is None}, "id": point["id"]}
        self.recorded.append(row["id"])
        self.store.append(row)
        self.shown.advance()
        self.shown.describe(f"bench: {row['variant']} B={row['batch']} done")

    def todo(self, points: List[Dict[str, Any]], what: str) -> List[Dict[str, Any]]:
        skipped = [p for p in points if p["id"] in self.done]
        if skipped:
            self.log(f"{what}: {len(skipped)} row(s) done earlier, skipped")
        return [p for p in points if p["id"] not in self.done]

    # -- the parts ------------------------------------------------------------------------------

    def engine(self) -> None:
        """The executables' rows, one point after the other; failures are rows too."""
        if self.cc is None:
            found, why = build_mod.detect_cc()
            self.cc, self.cc_reason = found, ("" if found else build_mod.no_cc_message(why))
            self.meta["cc"] = self.cc
        runner = PointRunner(self.cc, self.opts.timeout) if self.cc else None
        points = self.todo(self.points, "engine")
        for i, p in enumerate(points, 1):
            label = f"[{i}/{len(points)}] {p['variant']} B={p['batch']} gen={p['gen']}"
            self.shown.describe(f"bench: {p['variant']} B={p['batch']}")
            if runner is None:
                row = failed_row(p["variant"], p["batch"], p["gen"], p["precision"],
                                 self.cc_reason, p)
                self.log(f"{label} ... FAILED: {self.cc_reason}")
            else:
                row = engine_row(runner.run(p))
                self.log(f"{label} ... " + (f"{row['tokens_per_s_median']:.0f} tok/s"
                                            if row["status"] == "ok" else f"FAILED: {row['error']}"))
            self.record(row)

    def copy_bandwidth(self) -> None:
        if self.opts.copy_gbps:
            self.meta.update(copy_gbps=float(self.opts.copy_gbps),
                             copy_source="given with --copy-gbps")
        else:
            try:
                self.log("device-to-device copy bandwidth ...")
                bw = measure_copy_bandwidth()
                self.meta.update(copy_gbps=bw["gbps"], copy_gbps_min=bw["gbps_min"],
                                 copy_gbps_max=bw["gbps_max"], copy_source=copy_source(bw))
                self.log(f"device-to-device copy bandwidth ... {bw['gbps']:.0f} GB/s")
            except BenchError as e:
                self.meta["copy_note"] = f"not measured: {e}"
            except Exception as e:  # a CUDA error, out of memory
                self.meta["copy_note"] = f"not measured: {first_line(e)}"
        self.store.rewrite()  # the engine rows with their % of floor

    def gpt2_optim(self) -> None:
        batches = {p["batch"] for p in self.todo(self.g2o_points, "gpt2_optim")}
        points = [p for p in self.g2o_points
                  if p["variant"] == names.GPT2OPTIM_NAIVE and p["batch"] in batches]
        if not points:
            return
        if self.cc is None:
            return gpt2optim.failed_rows(points, self.cc_reason, self.record)
        tokenizer = bench_tokenizer()
        self.meta.update(gpt2optim.describe(self.trees, self.cc, tokenizer))
        try:
            program = gpt2optim.build(self.trees, self.cc, self.log)
        except BuildError as e:
            self.log(str(e))
            return gpt2optim.failed_rows(points, e.cause, self.record)
        ckpt = (self.checkpoint if names.precision_dtype(self.opts.precision) == "bf16" or
                self.opts.checkpoint else models.resolve_model(self.opts.model, gpt2optim.PRECISION))
        gpt2optim.run_rows(program, ckpt, tokenizer, points, self.opts.warmup, self.opts.repeat,
                           self.opts.timeout, self.log, self.record, self.meta.get("gpu"))

    def hugging_face(self) -> None:
        batches = sorted({p["batch"] for p in self.todo(self.hf_points, "Hugging Face")},
                         key=list(self.opts.batches).index)
        if not batches:
            return

        def hf_done(row: Dict[str, Any], info: Dict[str, Any]) -> None:
            self.meta.update(info)
            self.record(row)

        start = len(self.recorded)
        self.shown.describe("bench: Hugging Face generate (the compiled rows compile first)")
        rows, info = run_hf(self.checkpoint, batches, self.opts.gen, self.opts.precision,
                            self.opts.hf_warmup, self.opts.repeat, compile=self.opts.hf_compile,
                            log=self.log, on_row=hf_done)
        self.meta.update(info)
        if len(self.recorded) - start < len(rows):  # the returned rows are the authority
            for row in rows[len(self.recorded) - start:]:
                self.record(row)

    def run(self) -> BenchResult:
        self.log(f"results directory: {self.out_dir} (rewritten after every row)")
        try:
            self.store.rewrite()  # the meta data and no rows yet: the run is under way
            with progress.bar("bench", len(set(self.plan) - self.done)) as self.shown:
                self.engine()
                self.copy_bandwidth()
                self.gpt2_optim()
                self.hugging_face()
        except KeyboardInterrupt:
            self.log(f"interrupted: the {len(self.recorded)} rows finished so far are in "
                     f"{self.out_dir} (complete: false)")
            raise
        df, table, paths = self.views(self.store.rows(), complete=True)
        what = f"bench: {self.opts.model if not self.opts.checkpoint else self.checkpoint.name}"
        return BenchResult(df, self.meta, table, paths,
                           plot(df, paths["plot"], plot_title(f"{what}, tokens/s against B", df)))


def run_bench(opts: BenchOptions, log: Log = stderr_log) -> BenchResult:
    """Run everything, write the results, return them. Raises ConfigError / CheckpointError /
    ExperimentError for what stops the whole run (gen beyond the context, an unreadable
    checkpoint, a gpt2_optim checkout that is not one).

    Nothing finished is lost: the results directory is made (and logged) before the first row,
    and its views are rewritten atomically after every row with ``meta["complete"] = False``;
    the last write, after everything, says True. A run killed mid-way leaves the rows finished
    so far, and the same command with the same ``out`` goes on from there."""
    return Bench(opts, log).run()
