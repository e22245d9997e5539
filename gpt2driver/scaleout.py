"""Scale-out of a sweep: one worker per local GPU, or a Slurm job array.

Local GPUs (``gpt2driver sweep --gpus all|0,1``): the builds and models are prepared once, then
one worker thread per GPU takes the next unfinished point and runs it with
``CUDA_VISIBLE_DEVICES=<gpu>``; a GPU never runs two points at once. Rows go to the sweep's
ResultsStore (its lock serializes the appends). Ctrl-C kills the running executables and keeps the
finished points.

Slurm (``gpt2driver sweep --executor slurm``): the unfinished points are split into shards (one
per group of variants that are compared with each other, so that a speedup is measured on one
GPU), written as JSON under ``<results>/slurm/<submission>/`` with a batch script, and submitted
as one job array with ``sbatch``. Task *i* runs ``python -m gpt2driver.scaleout run-shard
shards/<i>.json --out shards/<i>.jsonl``: the points of its shard, one result line each. The
driver polls ``squeue``, gathers new lines into the ResultsStore as they appear, and at the end
reports the tasks that failed with the tail of their log (``logs/<job>_<task>.out``). Final task
states come from ``sacct`` when accounting is on, else from ``scontrol show job``.
``<results>/slurm/current.json`` names the job in flight: a driver started again while it runs
waits for it instead of submitting the same points twice. Builds and models are made before
submission on the submitting host; the results directory, the build directory, the models and
the Python environment must be on a filesystem shared with the compute nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .checkpoint import atomic_write_text
from .configs import GROUP_FIELDS
from .sweep import (PointRunner, ResultsStore, SweepError, SweepInterrupted, _stderr, log_row,
                    make_row, point_label)

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Local GPUs
# ------------------------------------------------------------------------------------------------

_GPU_LINE = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: [^)]*\))?\s*$")


def list_gpus() -> List[Tuple[int, str]]:
    """(index, name) of each GPU ``nvidia-smi -L`` lists (MIG instances are not listed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise SweepError("nvidia-smi not found on PATH: cannot list the GPUs for --gpus")
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SweepError(f"nvidia-smi -L failed: {e}") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        why = msg[-1] if msg else f"exit code {proc.returncode}"
        raise SweepError(f"nvidia-smi -L failed: {why}")
    gpus = []
    for line in proc.stdout.splitlines():
        m = _GPU_LINE.match(line)
        if m:
            gpus.append((int(m.group(1)), m.group(2).strip()))
    return gpus


def parse_gpus(spec: str) -> List[int]:
    """``all`` (every GPU nvidia-smi -L lists) or comma-separated nvidia-smi indices."""
    text = str(spec).strip().lower()
    listed = list_gpus()
    known = [i for i, _ in listed]
    if text == "all":
        if not known:
            raise SweepError("--gpus all: nvidia-smi -L lists no GPU")
        return known
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise SweepError(f"--gpus: expected 'all' or GPU indices such as 0,1; "
                         f"got {spec!r}") from None
    if not ids or any(i < 0 for i in ids):
        raise SweepError(f"--gpus: expected 'all' or GPU indices such as 0,1; got {spec!r}")
    if len(set(ids)) != len(ids):
        raise SweepError(f"--gpus: a GPU is listed twice in {spec!r} (one worker per GPU)")
    unknown = [i for i in ids if i not in known]
    if unknown:
        have = ", ".join(f"{i} ({n})" for i, n in listed) or "none"
        raise SweepError(f"--gpus: GPU {unknown[0]} is not listed by nvidia-smi -L (GPUs: {have})")
    return ids


def _own_process_groups() -> List[int]:
    """Children of this process that lead their own process group: the executables run_binary
    started (it starts each in a new session). Linux only (/proc); empty elsewhere."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for d in entries:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        try:
            ppid, pgrp = int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            continue
        if ppid == me and pgrp == int(d):
            found.append(int(d))
    return found


def _kill_children() -> None:
    for pgid in _own_process_groups():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_on_gpus(points: List[Dict[str, Any]], gpus: Sequence[int], store: ResultsStore,
                runner: PointRunner, labels: Dict[str, str], log: Log = _stderr) -> int:
    """Run the points on the GPUs, one worker per GPU; return how many finished.

    Builds and models are prepared first (once). Each worker runs one point at a time, pinned to
    its GPU. Ctrl-C (KeyboardInterrupt in the main thread) kills the running executables, keeps
    the finished points and raises SweepInterrupted.
    """
    if not points:
        return 0
    gpus = list(gpus)
    if not gpus:
        raise SweepError("no GPU to run on")
    log_lock = threading.Lock()

    def say(msg: str) -> None:
        with log_lock:
            log(msg)

    say(f"{len(points)} point(s) on {len(gpus)} GPU(s) ({', '.join(str(g) for g in gpus)}), "
        f"one point per GPU at a time")
    runner.prepare_points(points)  # builds and models once, before the workers start
    # (Ctrl-C during the builds: KeyboardInterrupt, which run_sweep turns into SweepInterrupted.)

    todo: "queue.Queue[Dict[str, Any]]" = queue.Queue()
    for p in points:
        todo.put(p)
    stop = threading.Event()
    errors: List[BaseException] = []
    finished = [0]

    def work(gpu: int) -> None:
        mine = runner.for_gpu(gpu)
        while not stop.is_set():
            try:
                p = todo.get_nowait()
            except queue.Empty:
                return
            try:
                row = mine.run(p)
                if stop.is_set() and row["status"] != "ok":
                    return  # killed by the interrupt: not a result
                store.append(row)
                with log_lock:
                    finished[0] += 1
                say_row(labels.get(p["id"], point_label(p, [])), row, gpu)
            except BaseException as e:  # a store write failed...: stop everything, re-raise
                errors.append(e)
                stop.set()
                return

    def say_row(label: str, row: Dict[str, Any], gpu: int) -> None:
        with log_lock:
            log_row(log, label, row, where=f" GPU {gpu}:")

    threads = [threading.Thread(target=work, args=(g,), name=f"gpt2driver-gpu{g}", daemon=True)
               for g in gpus]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        deadline = time.monotonic() + 60
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            _kill_children()
            for t in threads:
                t.join(timeout=0.1)
        raise SweepInterrupted(f"interrupted: the running points were stopped; {finished[0]} "
                               f"point(s) finished in this run are kept in {store.jsonl}; rerun "
                               f"the same command to resume") from None
    if errors:
        raise errors[0]
    return finished[0]


# ------------------------------------------------------------------------------------------------
# Shards
# ------------------------------------------------------------------------------------------------


def group_points(points: Iterable[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Points grouped by what their speedups compare (GROUP_FIELDS: the variants of one model,
    precision, batch, gen, prompt length), in order of first appearance."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(tuple(p.get(k) for k in GROUP_FIELDS), []).append(p)
    return list(groups.values())


def make_shards(points: List[Dict[str, Any]],
                max_tasks: Optional[int] = None) -> List[List[Dict[str, Any]]]:
    """One shard per group of points; at most ``max_tasks`` shards (consecutive groups merged,
    as evenly as possible). A group is never split, so its variants run on the same GPU."""
    groups = group_points(points)
    if not max_tasks or len(groups) <= max_tasks:
        return groups
    base, extra = divmod(len(groups), max_tasks)
    shards, i = [], 0
    for t in range(max_tasks):
        take = base + (1 if t < extra else 0)
        shards.append([p for g in groups[i:i + take] for p in g])
        i += take
    return shards


def shard_entry(point: Dict[str, Any], bin_dir: Path, model_path: Path, cc: int,
                timeout_s: float) -> Dict[str, Any]:
    """A point as a shard file holds it: the point plus what runs it (absolute paths)."""
    return {**point, "run": {"bin_dir": str(Path(bin_dir).resolve()),
                             "model_path": str(Path(model_path).resolve()),
                             "cc": cc, "timeout_s": timeout_s}}


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """Complete lines of a jsonl file (a torn last line is left out)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
    return rows


def _append_jsonl(path: Path, row: Dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, allow_nan=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


class ShardOutputs:
    """Reads the tasks' result files incrementally (from where it stopped reading)."""

    def __init__(self, shard_dir: Path, tasks: Dict[str, List[str]]):
        self.dir = Path(shard_dir)
        self.tasks = tasks
        self._offsets: Dict[str, int] = {t: 0 for t in tasks}
        self.rows: Dict[str, Dict[str, Dict[str, Any]]] = {t: {} for t in tasks}  # latest per id

    def path(self, task: str) -> Path:
        return self.dir / f"{task}.jsonl"

    def poll(self) -> List[Tuple[str, Dict[str, Any]]]:
        """(task, row) for each result line written since the last poll."""
        new = []
        for task, ids in self.tasks.items():
            try:
                with open(self.path(task), "rb") as f:
                    f.seek(self._offsets[task])
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # complete lines only
            self._offsets[task] += end
            for line in data[:end].decode("utf-8", "replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("id") in ids:
                    self.rows[task][row["id"]] = row
                    new.append((task, row))
        return new

    def finished_ids(self) -> set:
        return {i for rows in self.rows.values() for i in rows}


# ------------------------------------------------------------------------------------------------
# Slurm commands
# ------------------------------------------------------------------------------------------------

_RESERVED = {"array", "output", "error", "chdir", "parsable", "wrap", "input"}
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class SlurmOptions:
    """How to submit: sbatch options and the driver's polling."""

    partition: Optional[str] = None
    gres: Optional[str] = "gpu:1"          # None or "none": no --gres
    time: Optional[str] = None
    extra: Sequence[str] = ()              # "KEY=VAL" or "KEY": --KEY=VAL / --KEY
    max_tasks: Optional[int] = None        # at most this many array tasks
    max_running: Optional[int] = None      # --array=0-N%max_running
    poll_s: float = 10.0                   # seconds between squeue calls
    settle_s: float = 20.0                 # wait this long for result lines of ended tasks (NFS)
    max_wait_s: Optional[float] = None     # give up waiting (the job keeps running) after this
    python: str = field(default_factory=lambda: sys.executable)

    def sbatch_args(self, n_tasks: int, log_pattern: str, job_name: str, chdir: str) -> List[str]:
        array = f"0-{n_tasks - 1}" + (f"%{self.max_running}" if self.max_running else "")
        args = [f"--array={array}", f"--output={log_pattern}", f"--job-name={job_name}",
                f"--chdir={chdir}", "--ntasks=1"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.gres and self.gres.lower() != "none":
            args.append(f"--gres={self.gres}")
        if self.time:
            args.append(f"--time={self.time}")
        for opt in self.extra:
            key, sep, val = str(opt).partition("=")
            key = key.strip().lstrip("-")
            if not _KEY.match(key):
                raise SweepError(f"--slurm-opt {opt!r}: expected KEY=VALUE (an sbatch long option)")
            if key in _RESERVED:
                raise SweepError(f"--slurm-opt {key}: set by gpt2driver itself")
            args.append(f"--{key}={val}" if sep else f"--{key}")
        return args


def _slurm(cmd: List[str], timeout: float = 60) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, "", f"{cmd[0]}: not found"
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, "", str(e)
    return proc.returncode, proc.stdout, proc.stderr


def _expand_tasks(spec: str) -> List[str]:
    """Array task ids: '3', '[3-5,7]', '3-5%2' -> ['3', '4', '5', ...]."""
    spec = spec.strip().strip("[]").split("%")[0]
    out = []
    for part in spec.split(","):
        lo, sep, hi = part.partition("-")
        if lo.isdigit() and (not sep or hi.isdigit()):
            out.extend(str(i) for i in range(int(lo), int(hi if sep else lo) + 1))
    return out


def queue_states(job_id: str) -> Optional[Dict[str, Tuple[str, str]]]:
    """task -> (state, reason) of the job's array tasks still known to squeue ({} once none is
    left), or None when squeue did not answer."""
    rc, out, err = _slurm(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%i|%T|%r"])
    if rc != 0:
        return {} if "invalid job id" in (err + out).lower() else None
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or "_" not in parts[0]:
            continue
        for task in _expand_tasks(parts[0].split("_", 1)[1]):
            states[task] = (parts[1], parts[2] if len(parts) > 2 else "")
    return states


def final_states(job_id: str) -> Dict[str, Tuple[str, str]]:
    """task -> (state, exit code 'rc:signal') from sacct, or from scontrol show job when
    accounting is off; {} when neither knows the job any more."""
    rc, out, _ = _slurm(["sacct", "-n", "-P", "-X", "-j", str(job_id),
                         "-o", "JobID,State,ExitCode"])
    states: Dict[str, Tuple[str, str]] = {}
    if rc == 0:
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and "_" in parts[0]:
                for task in _expand_tasks(parts[0].split("_", 1)[1]):
                    states[task] = (parts[1].split()[0] if parts[1].split() else "", parts[2])
        if states:
            return states
    rc, out, _ = _slurm(["scontrol", "show", "job", "-o", str(job_id)])
    if rc == 0:
        for line in out.splitlines():
            kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if "ArrayTaskId" in kv:
                for task in _expand_tasks(kv["ArrayTaskId"]):
                    states[task] = (kv.get("JobState", ""), kv.get("ExitCode", ""))
    return states


def scancel(job_id: str) -> None:
    _slurm(["scancel", str(job_id)])


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e.strerror or e})"
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


# ------------------------------------------------------------------------------------------------
# Submission
# ------------------------------------------------------------------------------------------------

STATE_FILE = "current.json"


def _new_submission_dir(slurm_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        d = slurm_dir / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise SweepError(f"cannot create a submission directory under {slurm_dir}")


def write_submission(sub_dir: Path, shards: List[List[Dict[str, Any]]], opts: SlurmOptions,
                     job_name: str) -> Tuple[Path, List[str]]:
    """Shard files (shards/<task>.json: a JSON list of shard entries), logs/ and job.sbatch;
    returns (script, the sbatch command line)."""
    shard_dir, log_dir = sub_dir / "shards", sub_dir / "logs"
    shard_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    for task, shard in enumerate(shards):
        (shard_dir / f"{task}.json").write_text(json.dumps(shard, indent=1, default=str) + "\n")
    args = opts.sbatch_args(len(shards), str(log_dir / "%A_%a.out"), job_name, str(sub_dir))
    script = sub_dir / "job.sbatch"
    cmd = ["sbatch", "--parsable", *args, str(script)]
    pkg_parent = Path(__file__).resolve().parent.parent
    q = shlex.quote
    script.write_text(
        "#!/bin/bash\n"
        f"# {job_name}: array task i runs the points of shards/i.json and appends one result\n"
        "# line per point to shards/i.jsonl. Submitted with:\n"
        f"#   {' '.join(q(c) for c in cmd)}\n"
        "set -u\n"
        f"export PYTHONPATH={q(str(pkg_parent))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "task=\"${SLURM_ARRAY_TASK_ID:?not started as a Slurm array task}\"\n"
        f"exec {q(opts.python)} -m gpt2driver.scaleout run-shard "
        f"{q(str(shard_dir))}/\"$task\".json --out {q(str(shard_dir))}/\"$task\".jsonl\n")
    script.chmod(0o755)
    return script, cmd


def submit(cmd: List[str]) -> str:
    """Run sbatch --parsable; the job id."""
    rc, out, err = _slurm(cmd, timeout=120)
    if rc != 0:
        raise SweepError(f"sbatch failed (exit code {rc}): {(err or out).strip()}")
    job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not job.isdigit():
        raise SweepError(f"sbatch did not print a job id: {out.strip()!r}")
    return job


def _load_state(slurm_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        state = json.loads((slurm_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not {"job_id", "dir", "tasks"} <= set(state):
        return None
    return state


def _shard_points(sub_dir: Path, task: str) -> List[Dict[str, Any]]:
    try:
        return json.loads((sub_dir / "shards" / f"{task}.json").read_text())
    except (OSError, ValueError):
        return []


class _Follower:
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
            log_row(self.log, label, row, where=where)
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
                raise SweepError(f"slurm job {self.job} is still in the queue after "
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
                shard = {p["id"]: p for p in _shard_points(self.dir, task)}
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
                lines.extend("    | " + l for l in _log_tail(log_file).splitlines())
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
            raise SweepInterrupted(f"interrupted: slurm job {self.job} was cancelled; {n} point(s) "
                                   f"it finished are kept in {self.store.jsonl}; rerun the same "
                                   f"command to submit the rest") from None
        bad, _ = self.finish()
        self.done()
        self.log(f"slurm job {self.job} ended: {self.n_ok()}/{self.n_points} point(s) ok"
                 + (f", {bad} task(s) with failures (see above)" if bad else ""))


def run_on_slurm(points: List[Dict[str, Any]], store: ResultsStore, runner: PointRunner,
                 out_dir: Path, labels: Dict[str, str], opts: Optional[SlurmOptions] = None,
                 log: Log = _stderr, name: str = "sweep") -> Optional[str]:
    """Submit the unfinished points as one job array, wait for it, gather; the job id (None when
    nothing was submitted). A job of an earlier run still in the queue is waited for first, and
    its points are not submitted again."""
    opts = opts or SlurmOptions()
    slurm_dir = Path(out_dir) / "slurm"
    exclude: set = set()
    earlier = _load_state(slurm_dir)
    if earlier is not None:
        states = queue_states(str(earlier["job_id"]))
        if states is None:
            raise SweepError(f"squeue does not answer: cannot tell whether slurm job "
                             f"{earlier['job_id']} (in {slurm_dir / STATE_FILE}) still runs")
        follower = _Follower(earlier, store, labels, opts, log, slurm_dir)
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
            raise SweepError(f"{tool} not found on PATH: --executor slurm needs the Slurm commands")

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
            log_row(log, labels.get(p["id"], point_label(p, [])), row)
            continue
        ready.append(p)
        entries.append(shard_entry(p, bin_dir, ckpt, runner.cc, runner.timeout_s))
    if not ready:
        return None
    by_id = {e["id"]: e for e in entries}
    shards = [[by_id[p["id"]] for p in shard] for shard in make_shards(ready, opts.max_tasks)]
    sub_dir = _new_submission_dir(slurm_dir)
    script, cmd = write_submission(sub_dir, shards, opts, f"gpt2driver-{name}")
    job = submit(cmd)
    state = {"job_id": job, "dir": str(sub_dir.resolve()),
             "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "tasks": {str(t): [e["id"] for e in shard] for t, shard in enumerate(shards)}}
    atomic_write_text(slurm_dir / STATE_FILE, json.dumps(state, indent=1) + "\n")
    log(f"submitted slurm job {job}: {len(ready)} point(s) in {len(shards)} array task(s); "
        f"script {script}, logs {sub_dir / 'logs'}")
    _Follower(state, store, labels, opts, log, slurm_dir).follow()
    return job


# ------------------------------------------------------------------------------------------------
# The array task: python -m gpt2driver.scaleout run-shard <shard.json> --out <shard.jsonl>
# ------------------------------------------------------------------------------------------------


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
    done = {r["id"] for r in _read_jsonl(out_path) if r.get("status") == "ok"}
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
        _append_jsonl(out_path, row)
        if row["status"] == "ok":
            log(f"{label}: ok, {row['tokens_per_s_median'] or 0:.1f} tok/s on {row['gpu']}")
        else:
            failed += 1
            log(f"{label}: FAILED: {runner.last_error or row['error']}")
    log(f"shard finished: {len(points) - failed}/{len(points)} point(s) ok")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt2driver.scaleout",
                                     description="Internal entry points of gpt2driver's scale-out.")
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
