"""Run a sweep: every point of a config, resumable, results in results.{jsonl,csv,json}.

``results.jsonl`` is append-only (one line per finished point, fsynced); ``results.csv`` and
``results.json`` are rewritten from it atomically after every point. A rerun skips the points
already recorded as ok.

Points run one after the other on the default GPU, or (``gpus=[...]``, ``executor="slurm"``)
through :mod:`gpt2driver.scaleout`: one worker per local GPU, or a Slurm job array.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import build as build_mod
from .checkpoint import atomic_write_text
from .configs import GROUP_FIELDS, POINT_FIELDS, SweepConfig, expand
from .protocol import tokens_per_s
from .runner import RunError, engine_args, run_binary

RESULT_FIELDS = ("gpu", "gpu_index", "host", "cc", "status", "error", "tokens_per_s_median",
                 "tokens_per_s_min", "tokens_per_s_max", "prefill_ms", "step_ms", "total_ms",
                 "mem_weights_bytes", "mem_kv_bytes", "mem_act_bytes", "mem_total_bytes",
                 "mem_device_used_bytes", "wall_s", "finished_at")
COLUMNS = ("id",) + POINT_FIELDS + RESULT_FIELDS + ("speedup_vs_naive",)
Log = Callable[[str], None]


class SweepError(RuntimeError):
    """The sweep cannot start (no GPU, bad results directory...)."""


class SweepInterrupted(SweepError):
    """Ctrl-C: the running point was stopped; finished points are kept."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Models and binaries
# ------------------------------------------------------------------------------------------------


def resolve_model(model: str, precision: str, checkpoint: Optional[str] = None) -> Path:
    """The checkpoint file for a point: the given file, or a preset with random weights
    (generated once into the default model directory, named ``<preset>_random_<dtype>.bin``)."""
    from .checkpoint import (DEFAULT_MODEL_SEED, CheckpointError, ModelConfig, default_model_path,
                             ensure_default_model, make_random_checkpoint, precision_dtype,
                             read_header, VERSION_BY_DTYPE)

    if checkpoint:
        read_header(checkpoint)  # fail early with the checkpoint's own message
        return Path(checkpoint)
    if model == "gpt2":
        return ensure_default_model(precision)
    cfg, dtype = ModelConfig.preset(model), precision_dtype(precision)
    path = default_model_path(precision).parent / f"{model}_random_{dtype}.bin"
    try:
        if read_header(path) == (cfg, VERSION_BY_DTYPE[dtype]):
            return path
    except CheckpointError:
        pass
    return make_random_checkpoint(path, cfg, dtype=dtype, seed=DEFAULT_MODEL_SEED)


def point_args(point: Dict[str, Any], checkpoint: Path) -> List[str]:
    return engine_args(checkpoint, batch=point["batch"], gen=point["gen"],
                       greedy=point["sampling"] == "greedy", temperature=point["temperature"],
                       top_k=point["top_k"], top_p=point["top_p"], seed=point["seed"],
                       prompt_len=point["prompt_len"], warmup=point["warmup"],
                       repeat=point["repeat"], quiet=True)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


class ResultsStore:
    """results.jsonl (the record) plus results.csv / results.json (views of it).

    Appends from several threads of one process are serialized by a lock (the line append and
    the rewrite of the views happen together).
    """

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir)
        self.jsonl = self.dir / "results.jsonl"
        self.csv = self.dir / "results.csv"
        self.json = self.dir / "results.json"
        self.lock = threading.RLock()

    def rows(self) -> List[Dict[str, Any]]:
        """Recorded rows, the latest per point id; a torn last line is ignored."""
        if not self.jsonl.exists():
            return []
        latest: Dict[str, Dict[str, Any]] = {}
        for line in self.jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "id" in row:
                latest.pop(row["id"], None)
                latest[row["id"]] = row
        return list(latest.values())

    def ok_ids(self) -> set:
        return {r["id"] for r in self.rows() if r.get("status") == "ok"}

    def append(self, row: Dict[str, Any]) -> None:
        self.extend([row])

    def extend(self, rows: List[Dict[str, Any]]) -> None:
        """Append rows to the record, then rewrite the views once."""
        if not rows:
            return
        with self.lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a") as f:
                f.write("".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
            self.rewrite()

    def rewrite(self) -> None:
        with self.lock:
            df = summarize(self.rows())
            atomic_write_text(self.csv, df.to_csv(index=False))
            atomic_write_text(self.json, df.to_json(orient="records", indent=2) + "\n")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def make_row(point: Dict[str, Any], result=None, error: Optional[str] = None,
             gpu: Optional[str] = None, cc: Optional[int] = None, wall_s: float = 0.0,
             gpu_index: Any = None, host: Optional[str] = None) -> Dict[str, Any]:
    """A results row. ``gpu`` is the device name the executable reported (config.device),
    ``gpu_index`` the GPU it was pinned to (CUDA_VISIBLE_DEVICES), ``host`` the machine."""
    row: Dict[str, Any] = {k: point.get(k) for k in ("id",) + POINT_FIELDS}
    row.update({k: None for k in RESULT_FIELDS})
    row.update(gpu=gpu, gpu_index=gpu_index, host=host or socket.gethostname(), cc=cc,
               status="failed" if error else "ok", error=error,
               wall_s=round(wall_s, 3), finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if result is not None:
        row["gpu"] = result.config.get("device", gpu)
        tps = tokens_per_s(result)
        row.update(tokens_per_s_median=tps["median"], tokens_per_s_min=tps["min"],
                   tokens_per_s_max=tps["max"])
        for k in ("prefill_ms", "step_ms", "total_ms"):
            row[k] = result.timing.get(k)
        for k, v in result.memory.items():
            if f"mem_{k}" in row:
                row[f"mem_{k}"] = v
    return {k: _clean(v) for k, v in row.items()}


def summarize(rows: List[Dict[str, Any]]):
    """A DataFrame of the rows with speedup_vs_naive (per GPU name and model/precision/batch/gen/
    prompt_len: a speedup never compares timings taken on different kinds of GPU)."""
    import pandas as pd

    def key(r):
        return (r.get("gpu"),) + tuple(r.get(k) for k in GROUP_FIELDS)

    naive = {key(r): r.get("tokens_per_s_median") for r in rows
             if r.get("variant") == "naive" and r.get("status") == "ok"}
    out = []
    for r in rows:
        base, tps = naive.get(key(r)), r.get("tokens_per_s_median")
        speedup = tps / base if r.get("status") == "ok" and tps and base else None
        out.append({**{c: r.get(c) for c in COLUMNS}, "speedup_vs_naive": speedup})
    return pd.DataFrame(out, columns=list(COLUMNS))


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def _varying(points: List[Dict[str, Any]], fields) -> List[str]:
    return [f for f in fields if len({p.get(f) for p in points}) > 1]


def point_label(point: Dict[str, Any], extra_fields: List[str]) -> str:
    names = {"precision": "", "model": "", "prompt_len": "prompt=", "sampling": ""}
    parts = [point["variant"]] + [f"{names.get(f, f + '=')}{point[f]}" for f in extra_fields]
    return " ".join(parts + [f"B={point['batch']}", f"gen={point['gen']}"])


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    """A number for a table; blank for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return fmt.format(v)


def format_table(df) -> str:
    """The end-of-sweep table: variant, B, gen, tokens/s median/min/max, speedup vs naive."""
    from tabulate import tabulate

    if df.empty:
        return "(no results)"
    records = df.to_dict("records")
    extra = _varying([r for r in records if r.get("gpu")], ("gpu",))
    extra += _varying(records, ("model", "precision", "prompt_len"))
    headers = extra + ["variant", "B", "gen", "tok/s median", "min", "max", "vs naive", "status"]
    body = []
    for r in records:
        body.append([r[f] for f in extra] + [
            r["variant"], r["batch"], r["gen"], _num(r["tokens_per_s_median"]),
            _num(r["tokens_per_s_min"]), _num(r["tokens_per_s_max"]),
            _num(r["speedup_vs_naive"], "{:.2f}x"),
            r["status"] if r["status"] == "ok" else f"failed: {str(r['error'])[:120]}"])
    align = ["left"] * (len(extra) + 1) + ["right"] * 6 + ["left"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True, colalign=align)


def plot(df, path: Path) -> Optional[str]:
    """tokens/s vs batch, one line per variant; returns a note instead when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install 'gpt2driver[plot]')"
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return "no successful points: no plot"
    records = ok.to_dict("records")
    extra = _varying(records, ("model", "precision", "gen", "prompt_len"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, grp in ok.groupby(["variant"] + extra, sort=False):
        label = label if isinstance(label, tuple) else (label,)
        grp = grp.sort_values("batch")
        ax.plot(grp["batch"], grp["tokens_per_s_median"], marker="o",
                label=" ".join(str(x) for x in label))
    ax.set_xscale("log", base=2)
    batches = sorted(ok["batch"].unique())
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size B")
    ax.set_ylabel("tokens/s (median)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------------


class PointRunner:
    """Runs points on one GPU; builds each precision and resolves each model once.

    ``gpu_index`` pins the executables to one GPU (CUDA_VISIBLE_DEVICES, in nvidia-smi's order);
    None leaves the environment alone (the default GPU).
    """

    def __init__(self, cc: int, timeout_s: float, jobs: Optional[int] = None,
                 gpu_index: Optional[int] = None):
        self.cc, self.timeout_s, self.jobs = cc, timeout_s, jobs
        self._bins: Dict[str, Any] = {}      # precision -> Path, or the exception
        self._models: Dict[tuple, Any] = {}  # (model, precision, checkpoint) -> Path, or exception
        self.gpu: Optional[str] = None
        self.gpu_index = gpu_index
        self.last_error: Optional[str] = None  # the full message of the last failure (stderr tail)

    def for_gpu(self, gpu_index: int) -> "PointRunner":
        """A runner pinned to one GPU that shares this one's builds and models (prepare them
        first: the caches are only read from the workers' threads)."""
        other = PointRunner(self.cc, self.timeout_s, self.jobs, gpu_index=gpu_index)
        other._bins, other._models = self._bins, self._models
        return other

    def preset(self, precision: str, model: str, checkpoint: Optional[str], bin_dir, ckpt) -> None:
        """Use an existing binary directory and checkpoint for these keys (no build, no model
        generation): how a Slurm shard runs what the submitting host prepared."""
        self._bins[precision] = Path(bin_dir)
        self._models[(model, precision, checkpoint)] = Path(ckpt)

    def env(self) -> Optional[Dict[str, str]]:
        if self.gpu_index is None:
            return None
        # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi by PCI bus.
        return {"CUDA_VISIBLE_DEVICES": str(self.gpu_index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    @staticmethod
    def _cached(cache: Dict, key, make):
        if key not in cache:
            try:
                cache[key] = make()
            except Exception as e:  # BuildError, CheckpointError, OSError: kept for every point
                cache[key] = e
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    def prepare(self, precision: str, model: str, checkpoint: Optional[str] = None):
        """(binary directory, checkpoint path); raises BuildError / CheckpointError."""
        bins = self._cached(self._bins, precision,
                            lambda: build_mod.build(self.cc, precision, jobs=self.jobs, quiet=True))
        ckpt = self._cached(self._models, (model, precision, checkpoint),
                            lambda: resolve_model(model, precision, checkpoint))
        return Path(bins), Path(ckpt)

    def run(self, p: Dict[str, Any]) -> Dict[str, Any]:
        """Run one point; the row records either its results or why it failed."""
        t0 = time.monotonic()
        result, error = None, None
        try:
            bin_dir, ckpt = self.prepare(p["precision"], p["model"], p["checkpoint"])
            env = self.env()
            kw = {"env": env} if env is not None else {}
            result = run_binary(bin_dir / p["variant"], point_args(p, ckpt), timeout=self.timeout_s,
                                **kw)
        except build_mod.BuildError as e:
            error, self.last_error = f"build failed: {str(e).splitlines()[0]}", str(e)
        except RunError as e:
            error, self.last_error = str(e).splitlines()[0], str(e)
        except Exception as e:  # model preparation (CheckpointError, OSError)
            error = self.last_error = f"model: {e}"
        row = make_row(p, result, error, gpu=self.gpu, cc=self.cc, wall_s=time.monotonic() - t0,
                       gpu_index=self.gpu_index)
        self.gpu = row["gpu"] or self.gpu
        return row

    def prepare_points(self, points: List[Dict[str, Any]]) -> None:
        """Build every precision and resolve every model the points need, once; failures are
        kept and reported by run() for each point concerned."""
        for p in points:
            try:
                self.prepare(p["precision"], p["model"], p["checkpoint"])
            except Exception:
                pass


def ordered_rows(store: ResultsStore, order: Dict[str, int]) -> List[Dict[str, Any]]:
    """This config's rows in sweep order; grouped by GPU name when they come from several kinds
    of GPU (a cluster with mixed nodes)."""
    rows = [r for r in store.rows() if r["id"] in order]
    if len({r.get("gpu") for r in rows if r.get("gpu")}) > 1:
        return sorted(rows, key=lambda r: (r.get("gpu") is None, r.get("gpu") or "",
                                           order[r["id"]]))
    return sorted(rows, key=lambda r: order[r["id"]])


def run_sweep(cfg: SweepConfig, out_dir: Path, cc: Optional[int] = None, dry_run: bool = False,
              log: Log = _stderr, jobs: Optional[int] = None, gpus: Optional[List[int]] = None,
              executor: str = "local", slurm=None):
    """Run the sweep's missing points; return the summary DataFrame of this config's points.

    ``gpus``: run on these GPUs (nvidia-smi indices), one worker each, each point pinned to one
    GPU. ``executor="slurm"``: submit the missing points as a Slurm job array (``slurm``: a
    :class:`gpt2driver.scaleout.SlurmOptions`) and gather its results. Default: one point after
    the other on the default GPU.
    """
    if executor not in ("local", "slurm"):
        raise SweepError(f"unknown executor {executor!r} (local or slurm)")
    if gpus is not None and executor != "local":
        raise SweepError("--gpus is for the local executor; Slurm tasks get a GPU through --gres")
    points = expand(cfg)
    store = ResultsStore(out_dir)
    done = store.ok_ids()
    extra = _varying(points, ("model", "precision", "prompt_len", "sampling"))
    n = len(points)
    order = {p["id"]: k for k, p in enumerate(points)}  # the results dir may hold other points
    if dry_run:
        for i, p in enumerate(points, 1):
            print(f"[{i}/{n}] {point_label(p, extra)}  id={p['id']}"
                  f"{'  (done)' if p['id'] in done else ''}")
        print(f"{n} points, {len(done & set(order))} already done; results in {out_dir}")
        return summarize(ordered_rows(store, order))

    if any(p["id"] not in done for p in points):
        cc = cc or cfg.cc
        if cc is None:
            cc, reason = build_mod.detect_cc()
            if cc is None:
                raise SweepError(f"cannot detect the GPU's compute capability: {reason} (use --cc)")
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create results directory {out_dir}: {e.strerror or e}") from None

    runner = PointRunner(cc, cfg.timeout_s, jobs)
    labels = {p["id"]: f"[{i}/{n}] {point_label(p, extra)}" for i, p in enumerate(points, 1)}
    if executor == "slurm" or gpus is not None:
        from . import scaleout

        try:
            if executor == "slurm":
                scaleout.run_on_slurm(points, store, runner, Path(out_dir), labels, slurm, log=log,
                                      name=cfg.name)
            else:
                todo = []
                for p in points:
                    if p["id"] in done:
                        log(f"{labels[p['id']]} ... done earlier, skipped")
                    else:
                        todo.append(p)
                scaleout.run_on_gpus(todo, gpus, store, runner, labels, log=log)
        except KeyboardInterrupt:  # before the workers / the submission
            raise SweepInterrupted(f"interrupted: finished points are kept in {store.jsonl}; "
                                   f"rerun the same command to resume") from None
    else:
        _run_in_order(points, done, store, runner, labels, log)
    df = summarize(ordered_rows(store, order))
    print(format_table(df))
    png = Path(out_dir) / "tokens_per_s.png"
    print(plot(df, png) or f"plot: {png}")
    print(f"results: {store.csv} {store.json}")
    return df


def log_row(log: Log, label: str, row: Dict[str, Any], where: str = "") -> None:
    if row["status"] == "ok":
        log(f"{label} ...{where} {_num(row['tokens_per_s_median'], '{:.0f}') or '?'} tok/s")
    else:
        log(f"{label} ...{where} FAILED: {row['error']}")


def _run_in_order(points, done, store: ResultsStore, runner: PointRunner, labels, log: Log) -> None:
    """The default: one point after the other on the default GPU."""
    finished = 0
    try:
        for p in points:
            label = labels[p["id"]]
            if p["id"] in done:
                log(f"{label} ... done earlier, skipped")
                continue
            row = runner.run(p)
            store.append(row)
            finished += 1
            log_row(log, label, row)
    except KeyboardInterrupt:
        raise SweepInterrupted(f"interrupted: {finished} point(s) finished in this run are kept in "
                               f"{store.jsonl}; rerun the same command to resume") from None
