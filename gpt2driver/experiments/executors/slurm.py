"""The Slurm executor (``gpt2driver sweep --executor slurm``): the unfinished points go to shards of
one job array (:mod:`.slurm_jobs`) submitted with ``sbatch``; task *i* runs ``python -m
gpt2driver.experiments.executors.shard run-shard shards/<i>.json --out shards/<i>.jsonl``. The driver
polls ``squeue``, gathers new rows into the store as they appear, and at the end reports the tasks
that failed with the tail of their log (``logs/<job>_<task>.out``). Final task states come from
``sacct`` when accounting is on, else from ``scontrol show job``. A driver started again while the
job of ``<results>/slurm/current.json`` runs waits for it instead of submitting its points twice.
Builds and models are made before submission on the submitting host; the results directory, the
build directory, the models and the Python environment must be on a filesystem shared with the
compute nodes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import ExperimentError, Interrupted
from ...files.atomic import atomic_write_text
from ...tables.rows import make_row
from ...tables.views import point_label, progress_line
from ..pointrunner import PointRunner
from ..store import ResultsStore
from .base import Executor, Log, Point, stderr_log
from .slurm_cmd import SlurmOptions, final_states, log_tail, queue_states, scancel
from .slurm_jobs import (STATE_FILE, ShardOutputs, load_state, make_shards, new_submission_dir,
                         shard_entry, shard_points, submit, write_submission)


class Follower:
    """Waits for one submitted job array, gathering its results into the store."""

    def __init__(self, state: Dict[str, Any], store: ResultsStore, labels: Dict[str, str],
                 opts: SlurmOptions, log: Log, slurm_dir: Path):
        self.state, self.store, self.labels, self.opts, self.log = state, store, labels, opts, log
        self.slurm_dir = slurm_dir
        self.job = str(state["job_id"])
        self.dir = Path(state["dir"])
        self.tasks = {str(t): list(ids) for t, ids in state["tasks"].items()}
        self.outputs = ShardOutputs(self.dir / "shards", self.tasks)
        self.n_points = sum(len(ids) for ids in self.tasks.values())
        self.failed_ids: set = set()

    def log_path(self, task: str) -> Path:
        return self.dir / "logs" / f"{self.job}_{task}.out"

    def gather(self) -> int:
        """Record the new result lines in the store (skipping rows it already holds)."""
        new = self.outputs.poll()
        if not new:
            return 0
        have = {r["id"]: r for r in self.store.rows()}
        fresh = [(t, r) for t, r in new if have.get(r["id"]) != r]
        self.store.extend([r for _, r in fresh])
        for task, row in fresh:
            where = (f" {row.get('gpu') or '?'} on {row.get('host') or '?'} "
                     f"(task {self.job}_{task}):")
            label = self.labels.get(row["id"]) or point_label(row, [])
            self.log(progress_line(label, row, where))
        for _, row in new:
            if row.get("status") == "ok":
                self.failed_ids.discard(row["id"])
            else:
                self.failed_ids.add(row["id"])
        return len(fresh)

    def progress(self, states: Dict[str, Tuple[str, str]]) -> Tuple[tuple, str]:
        """(what changes the tasks' picture, the progress line)."""
        running = sum(1 for s, _ in states.values() if s in ("RUNNING", "COMPLETING"))
        pending = [r for s, r in states.values() if s == "PENDING"]
        why = sorted({r for r in pending if r and r != "None"})
        why_s = f" ({', '.join(why)})" if why else ""
        done = len(self.tasks) - len(states)
        points = len(self.outputs.finished_ids())
        return ((done, running, len(pending), why_s),
                f"slurm job {self.job}: {done}/{len(self.tasks)} task(s) ended, {running} running, "
                f"{len(pending)} pending{why_s}; "
                f"{points}/{self.n_points} point(s) done, {len(self.failed_ids)} failed")

    def wait(self) -> None:
        last, last_t, warned = None, 0.0, False
        t0 = time.monotonic()
        while True:
            self.gather()
            states = queue_states(self.job)
            if states == {}:
                break
            if states is None:
                if not warned:
                    self.log(f"slurm job {self.job}: squeue does not answer; trying again")
                    warned = True
            else:  # a line when the tasks' states change, else every 5 minutes
                key, msg = self.progress(states)
                if key != last or time.monotonic() - last_t > 300:
                    self.log(msg)
                    last, last_t = key, time.monotonic()
            if self.opts.max_wait_s is not None and time.monotonic() - t0 > self.opts.max_wait_s:
                raise ExperimentError(f"slurm job {self.job} is still in the queue after "
                                 f"{self.opts.max_wait_s:g} s; it keeps running: rerun the same "
                                 f"command to wait for it and gather its results")
            time.sleep(self.opts.poll_s)
        # The job left the queue: wait a little for result lines still on their way (NFS).
        deadline = time.monotonic() + self.opts.settle_s
        while True:
            self.gather()
            if len(self.outputs.finished_ids()) >= self.n_points or time.monotonic() > deadline:
                break
            time.sleep(min(1.0, self.opts.poll_s))

    def finish(self) -> Tuple[int, int]:
        """Record the points no task reported as failed, report the failed tasks; returns
        (tasks with a problem, points without a result)."""
        states = final_states(self.job)
        bad_tasks, missing_total = 0, 0
        for task, ids in self.tasks.items():
            rows = self.outputs.rows[task]
            state, code = states.get(task, ("", ""))
            log_file = self.log_path(task)
            missing = [i for i in ids if i not in rows]
            failed = [i for i in ids if i in rows and rows[i].get("status") != "ok"]
            if missing:
                shard = {p["id"]: p for p in shard_points(self.dir, task)}
                how = f"{state or 'state unknown'}{f', exit {code}' if code else ''}"
                lost = [make_row(shard.get(i, {"id": i}), error=(
                    f"no result from slurm task {self.job}_{task} ({how}); log: {log_file}"))
                    for i in missing]
                for r in lost:
                    r["slurm_job"] = f"{self.job}_{task}"
                self.store.extend(lost)
                missing_total += len(missing)
            if missing or failed or (state and state != "COMPLETED"):
                bad_tasks += 1
                head = (f"slurm task {self.job}_{task} {state or '(state unknown)'}"
                        f"{f' exit {code}' if code else ''}: {len(failed)} of {len(ids)} point(s) "
                        f"failed, {len(missing)} without a result")
                lines = [head]
                for i in failed:
                    lines.append(f"  {self.labels.get(i) or point_label(rows[i], [])}: "
                                 f"{rows[i].get('error')}")
                lines.append(f"  log {log_file}, last lines:")
                lines.extend("    | " + l for l in log_tail(log_file).splitlines())
                self.log("\n".join(lines))
        return bad_tasks, missing_total

    def done(self) -> None:
        try:
            (self.slurm_dir / STATE_FILE).unlink()
        except OSError:
            pass

    def n_ok(self) -> int:
        return sum(1 for rows in self.outputs.rows.values() for r in rows.values()
                   if r.get("status") == "ok")

    def follow(self) -> None:
        """wait + finish, with Ctrl-C cancelling the job (finished points are kept)."""
        try:
            self.wait()
        except KeyboardInterrupt:
            self.log(f"interrupted: cancelling slurm job {self.job}")
            scancel(self.job)
            try:  # let the tasks end (SIGTERM, KillWait) so that what they wrote is gathered
                deadline = time.monotonic() + 30
                while queue_states(self.job) and time.monotonic() < deadline:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            self.gather()
            self.done()
            n = self.n_ok()
            raise Interrupted(f"interrupted: slurm job {self.job} was cancelled; {n} point(s) "
                                   f"it finished are kept in {self.store.jsonl}; rerun the same "
                                   f"command to submit the rest") from None
        bad, _ = self.finish()
        self.done()
        self.log(f"slurm job {self.job} ended: {self.n_ok()}/{self.n_points} point(s) ok"
                 + (f", {bad} task(s) with failures (see above)" if bad else ""))


def run_on_slurm(points: List[Point], store: ResultsStore, runner: PointRunner,
                 out_dir: Path, labels: Dict[str, str], opts: Optional[SlurmOptions] = None,
                 log: Log = stderr_log, name: str = "sweep") -> Optional[str]:
    """Submit the unfinished points as one job array, wait for it, gather; the job id (None when
    nothing was submitted). A job of an earlier run still in the queue is waited for first, and
    its points are not submitted again."""
    opts = opts or SlurmOptions()
    slurm_dir = Path(out_dir) / "slurm"
    exclude: set = set()
    earlier = load_state(slurm_dir)
    if earlier is not None:
        states = queue_states(str(earlier["job_id"]))
        if states is None:
            raise ExperimentError(f"squeue does not answer: cannot tell whether slurm job "
                             f"{earlier['job_id']} (in {slurm_dir / STATE_FILE}) still runs")
        follower = Follower(earlier, store, labels, opts, log, slurm_dir)
        if states:
            log(f"slurm job {earlier['job_id']} of an earlier run is still in the queue: "
                f"waiting for it instead of submitting its points again")
            exclude = {i for ids in follower.tasks.values() for i in ids}
        else:
            log(f"gathering the results of slurm job {earlier['job_id']} of an earlier run")
        follower.follow()

    done = store.ok_ids()
    skipped = sum(1 for p in points if p["id"] in done)
    if skipped:
        log(f"{skipped} point(s) done earlier, skipped")
    todo = [p for p in points if p["id"] not in done and p["id"] not in exclude]
    if not todo:
        log("nothing to submit: every point is done" if not exclude else
            "nothing more to submit; rerun to submit the points that failed")
        return None
    for tool in ("sbatch", "squeue"):
        if shutil.which(tool) is None:
            raise ExperimentError(f"{tool} not found on PATH: --executor slurm needs the Slurm commands")

    # Builds and models on the submitting host (shared filesystem), once.
    runner.prepare_points(todo)
    entries: List[Dict[str, Any]] = []
    ready = []
    for p in todo:
        try:
            bin_dir, ckpt = runner.prepare(p["precision"], p["model"], p["checkpoint"])
        except Exception:
            row = runner.run(p)  # fails at once with the cached build / model error
            store.append(row)
            log(progress_line(labels.get(p["id"]) or point_label(p, []), row))
            continue
        ready.append(p)
        entries.append(shard_entry(p, bin_dir, ckpt, runner.cc, runner.timeout_s))
    if not ready:
        return None
    by_id = {e["id"]: e for e in entries}
    shards = [[by_id[p["id"]] for p in shard] for shard in make_shards(ready, opts.max_tasks)]
    sub_dir = new_submission_dir(slurm_dir)
    script, cmd = write_submission(sub_dir, shards, opts, f"gpt2driver-{name}")
    job = submit(cmd)
    state = {"job_id": job, "dir": str(sub_dir.resolve()),
             "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "tasks": {str(t): [e["id"] for e in shard] for t, shard in enumerate(shards)}}
    atomic_write_text(slurm_dir / STATE_FILE, json.dumps(state, indent=1) + "\n")
    log(f"submitted slurm job {job}: {len(ready)} point(s) in {len(shards)} array task(s); "
        f"script {script}, logs {sub_dir / 'logs'}")
    Follower(state, store, labels, opts, log, slurm_dir).follow()
    return job


class Slurm(Executor):
    """A Slurm job array per run (``opts``: sbatch options and polling), results under
    ``out_dir/slurm``; ``name`` names the job."""

    def __init__(self, out_dir: Path, opts: Optional[SlurmOptions] = None, name: str = "sweep"):
        self.out_dir, self.opts, self.name = Path(out_dir), opts, name

    def run(self, points: List[Point], store: ResultsStore, runner: PointRunner,
            labels: Dict[str, str], log: Log = stderr_log) -> None:
        try:
            run_on_slurm(points, store, runner, self.out_dir, labels, self.opts, log, self.name)
        except KeyboardInterrupt:  # before the submission
            raise Interrupted(f"interrupted: finished points are kept in {store.jsonl}; rerun "
                              f"the same command to resume") from None
