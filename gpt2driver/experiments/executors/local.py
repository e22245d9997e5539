"""Local GPUs (``gpt2driver sweep --gpus all|0,1``): the builds and models are prepared once, then
one worker thread per GPU takes the next unfinished point and runs it with
``CUDA_VISIBLE_DEVICES=<gpu>``; a GPU never runs two points at once. Rows go to the store (its lock
serializes the appends). Ctrl-C kills the running executables and keeps the finished points.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Dict, List, Sequence, Tuple, Union

from ... import progress
from ...engine.build import NO_NVIDIA_SMI
from ...errors import BadInput, ExperimentError, Interrupted
from ...tables.views import point_label, progress_line
from ..pointrunner import PointRunner
from ..store import ResultsStore
from .base import Executor, Log, Point, not_done, stderr_log

_GPU_LINE = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: [^)]*\))?\s*$")


def list_gpus() -> List[Tuple[int, str]]:
    """(index, name) of each GPU ``nvidia-smi -L`` lists (MIG instances are not listed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise ExperimentError(f"cannot list the GPUs for --gpus: {NO_NVIDIA_SMI}")
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ExperimentError(f"nvidia-smi -L failed: {e}") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        why = msg[-1] if msg else f"exit code {proc.returncode}"
        raise ExperimentError(f"nvidia-smi -L failed: {why}")
    gpus = []
    for line in proc.stdout.splitlines():
        m = _GPU_LINE.match(line)
        if m:
            gpus.append((int(m.group(1)), m.group(2).strip()))
    return gpus


def gpu_spec(spec: str) -> Union[str, List[int]]:
    """The syntax of --gpus alone: ``"all"``, or the list of comma-separated indices; BadInput
    for anything else (checked before nvidia-smi is asked)."""
    text = str(spec).strip().lower()
    if text == "all":
        return text
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise BadInput(f"expected 'all' or GPU indices such as 0,1; got {spec!r}") from None
    if not ids or any(i < 0 for i in ids):
        raise BadInput(f"expected 'all' or GPU indices such as 0,1; got {spec!r}")
    if len(set(ids)) != len(ids):
        raise BadInput(f"a GPU is listed twice in {spec!r} (one worker per GPU)")
    return ids


def parse_gpus(spec: str) -> List[int]:
    """``all`` (every GPU nvidia-smi -L lists) or comma-separated nvidia-smi indices."""
    try:
        ids = gpu_spec(spec)
    except BadInput as e:
        raise ExperimentError(f"--gpus: {e}") from None
    listed = list_gpus()
    known = [i for i, _ in listed]
    if ids == "all":
        if not known:
            raise ExperimentError("--gpus all: nvidia-smi -L lists no GPU")
        return known
    unknown = [i for i in ids if i not in known]
    if unknown:
        have = ", ".join(f"{i} ({n})" for i, n in listed) or "none"
        raise ExperimentError(f"--gpus: GPU {unknown[0]} is not listed by nvidia-smi -L (GPUs: {have})")
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


def run_on_gpus(points: List[Point], gpus: Sequence[int], store: ResultsStore,
                runner: PointRunner, labels: Dict[str, str], log: Log = stderr_log) -> int:
    """Run the points on the GPUs, one worker per GPU; return how many finished.

    Builds and models are prepared first (once). Each worker runs one point at a time, pinned to
    its GPU. Ctrl-C (KeyboardInterrupt in the main thread) kills the running executables, keeps
    the finished points and raises SweepInterrupted.
    """
    if not points:
        return 0
    gpus = list(gpus)
    if not gpus:
        raise ExperimentError("no GPU to run on")
    log_lock = threading.Lock()

    def say(msg: str) -> None:
        with log_lock:
            log(msg)

    say(f"{len(points)} point(s) on {len(gpus)} GPU(s) ({', '.join(str(g) for g in gpus)}), "
        f"one point per GPU at a time")
    try:
        runner.prepare_points(points)  # builds and models once, before the workers start
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: finished points are kept in {store.jsonl}; rerun the "
                          f"same command to resume") from None

    todo: "queue.Queue[Dict[str, Any]]" = queue.Queue()
    for p in points:
        todo.put(p)
    stop = threading.Event()
    errors: List[BaseException] = []
    finished, shown_done = [0], [0]

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
                say(progress_line(labels.get(p["id"]) or point_label(p, []), row, f" GPU {gpu}:"))
            except BaseException as e:  # a store write failed...: stop everything, re-raise
                errors.append(e)
                stop.set()
                return

    threads = [threading.Thread(target=work, args=(g,), name=f"gpt2driver-gpu{g}", daemon=True)
               for g in gpus]
    try:
        with progress.bar(f"sweep on {len(gpus)} GPU(s)", len(points)) as shown:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
                shown.advance(finished[0] - shown_done[0])
                shown_done[0] = finished[0]
    except KeyboardInterrupt:
        stop.set()
        deadline = time.monotonic() + 60
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            _kill_children()
            for t in threads:
                t.join(timeout=0.1)
        raise Interrupted(f"interrupted: the running points were stopped; {finished[0]} "
                               f"point(s) finished in this run are kept in {store.jsonl}; rerun "
                               f"the same command to resume") from None
    if errors:
        raise errors[0]
    return finished[0]


class LocalGPUs(Executor):
    """One worker per GPU of ``gpus`` (nvidia-smi indices)."""

    def __init__(self, gpus: Sequence[int]):
        self.gpus = list(gpus)

    def run(self, points: List[Point], store: ResultsStore, runner: PointRunner,
            labels: Dict[str, str], log: Log = stderr_log) -> None:
        run_on_gpus(not_done(points, store, labels, log), self.gpus, store, runner, labels, log)
