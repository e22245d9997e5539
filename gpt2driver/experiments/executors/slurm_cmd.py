"""The Slurm commands the executor uses (sbatch's options, squeue, sacct / scontrol, scancel),
each run as an argument list with a timeout; a command that is missing or fails answers with an
exit code, never an exception."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ...errors import ExperimentError

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
                raise ExperimentError(f"--slurm-opt {opt!r}: expected KEY=VALUE (an sbatch long option)")
            if key in _RESERVED:
                raise ExperimentError(f"--slurm-opt {key}: set by gpt2driver itself")
            args.append(f"--{key}={val}" if sep else f"--{key}")
        return args


def slurm(cmd: List[str], timeout: float = 60) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, "", f"{cmd[0]}: not found"
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, "", str(e)
    return proc.returncode, proc.stdout, proc.stderr


def expand_tasks(spec: str) -> List[str]:
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
    rc, out, err = slurm(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%i|%T|%r"])
    if rc != 0:
        return {} if "invalid job id" in (err + out).lower() else None
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or "_" not in parts[0]:
            continue
        for task in expand_tasks(parts[0].split("_", 1)[1]):
            states[task] = (parts[1], parts[2] if len(parts) > 2 else "")
    return states


def final_states(job_id: str) -> Dict[str, Tuple[str, str]]:
    """task -> (state, exit code 'rc:signal') from sacct, or from scontrol show job when
    accounting is off; {} when neither knows the job any more."""
    rc, out, _ = slurm(["sacct", "-n", "-P", "-X", "-j", str(job_id),
                         "-o", "JobID,State,ExitCode"])
    states: Dict[str, Tuple[str, str]] = {}
    if rc == 0:
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and "_" in parts[0]:
                for task in expand_tasks(parts[0].split("_", 1)[1]):
                    states[task] = (parts[1].split()[0] if parts[1].split() else "", parts[2])
        if states:
            return states
    rc, out, _ = slurm(["scontrol", "show", "job", "-o", str(job_id)])
    if rc == 0:
        for line in out.splitlines():
            kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if "ArrayTaskId" in kv:
                for task in expand_tasks(kv["ArrayTaskId"]):
                    states[task] = (kv.get("JobState", ""), kv.get("ExitCode", ""))
    return states


def scancel(job_id: str) -> None:
    slurm(["scancel", str(job_id)])


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e.strerror or e})"
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"
