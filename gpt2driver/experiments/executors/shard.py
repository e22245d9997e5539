"""The Slurm array task: ``python -m gpt2driver.experiments.executors.shard run-shard <shard.json>
--out <shard.jsonl>`` runs a shard's points with what the submitting host prepared (no build, no
model generation), one result line per point."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ...tables.views import point_label
from ..pointrunner import PointRunner
from ..store import append_jsonl, read_jsonl


def _gpu_index_from_env() -> Any:
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not cvd:
        return None
    return int(cvd) if cvd.isdigit() else cvd


def run_shard(shard_path: Path, out_path: Path, log: Callable[[str], None] = print) -> int:
    """Run a shard's points (skipping those already ok in ``out_path``), appending one result
    line per point; 0 when every point is ok, 1 otherwise."""
    points = json.loads(Path(shard_path).read_text())
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"] for r in read_jsonl(out_path) if r.get("status") == "ok"}
    job = None
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    gpu_index = _gpu_index_from_env()
    log(f"gpt2driver shard {shard_path}: {len(points)} point(s) on {socket.gethostname()}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
        + (f", slurm task {job}" if job else ""))

    def term(signum, frame):  # scancel / time limit: the running executable is killed too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, term)
    failed = 0
    runner: Optional[PointRunner] = None
    for k, p in enumerate(points, 1):
        label = f"[{k}/{len(points)}] {point_label(p, [])} id={p['id']}"
        if p["id"] in done:
            log(f"{label}: done earlier, skipped")
            continue
        run = p["run"]
        if runner is None or (runner.cc, runner.timeout_s) != (run["cc"], run["timeout_s"]):
            runner = PointRunner(run["cc"], run["timeout_s"])
        runner.preset(p["precision"], p["model"], p["checkpoint"], run["bin_dir"],
                      run["model_path"])
        row = runner.run(p)
        row["gpu_index"] = gpu_index
        if job:
            row["slurm_job"] = job
        append_jsonl(out_path, [row])
        if row["status"] == "ok":
            log(f"{label}: ok, {row['tokens_per_s_median'] or 0:.1f} tok/s on {row['gpu']}")
        else:
            failed += 1
            log(f"{label}: FAILED: {runner.last_error or row['error']}")
    log(f"shard finished: {len(points) - failed}/{len(points)} point(s) ok")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt2driver.experiments.executors.shard",
                                     description="A Slurm array task of gpt2driver's sweep.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rs = sub.add_parser("run-shard", help="run the points of a shard file (a Slurm array task)")
    rs.add_argument("shard", type=Path, help="shard file: a JSON list of points")
    rs.add_argument("--out", type=Path, required=True, help="result lines are appended here")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        return run_shard(args.shard, args.out, log=say)
    except (OSError, ValueError, KeyError) as e:
        say(f"error: cannot run shard {args.shard}: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
