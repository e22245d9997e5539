"""A Slurm submission on disk: the unfinished points split into shards (one per group of points
whose ratios compare them, so that they run on one GPU), written as ``shards/<task>.json`` with a
batch script ``job.sbatch`` and ``logs/``; task *i* appends its rows to ``shards/<i>.jsonl``, read
back as they grow (:class:`ShardOutputs`). ``<results>/slurm/current.json`` names the job in flight.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import ExperimentError
from ...paths import repo_root
from ..points import group_points
from ..store import JsonlTail
from .slurm_cmd import SlurmOptions, slurm

SHARD_MODULE = "gpt2driver.experiments.executors.shard"


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


class ShardOutputs:
    """Reads the tasks' result files incrementally (from where it stopped reading)."""

    def __init__(self, shard_dir: Path, tasks: Dict[str, List[str]]):
        self.dir = Path(shard_dir)
        self.tasks = tasks
        self.tails = {t: JsonlTail(self.path(t)) for t in tasks}
        self.rows: Dict[str, Dict[str, Dict[str, Any]]] = {t: {} for t in tasks}  # latest per id

    def path(self, task: str) -> Path:
        return self.dir / f"{task}.jsonl"

    def poll(self) -> List[Tuple[str, Dict[str, Any]]]:
        """(task, row) for each result line written since the last poll."""
        new = []
        for task, ids in self.tasks.items():
            for row in self.tails[task].poll():
                if row["id"] in ids:
                    self.rows[task][row["id"]] = row
                    new.append((task, row))
        return new

    def finished_ids(self) -> set:
        return {i for rows in self.rows.values() for i in rows}


STATE_FILE = "current.json"


def new_submission_dir(slurm_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        d = slurm_dir / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise ExperimentError(f"cannot create a submission directory under {slurm_dir}")


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
    pkg_parent = repo_root()
    q = shlex.quote
    script.write_text(
        "#!/bin/bash\n"
        f"# {job_name}: array task i runs the points of shards/i.json and appends one result\n"
        "# line per point to shards/i.jsonl. Submitted with:\n"
        f"#   {' '.join(q(c) for c in cmd)}\n"
        "set -u\n"
        f"export PYTHONPATH={q(str(pkg_parent))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "task=\"${SLURM_ARRAY_TASK_ID:?not started as a Slurm array task}\"\n"
        f"exec {q(opts.python)} -m {SHARD_MODULE} run-shard "
        f"{q(str(shard_dir))}/\"$task\".json --out {q(str(shard_dir))}/\"$task\".jsonl\n")
    script.chmod(0o755)
    return script, cmd


def submit(cmd: List[str]) -> str:
    """Run sbatch --parsable; the job id."""
    rc, out, err = slurm(cmd, timeout=120)
    if rc != 0:
        raise ExperimentError(f"sbatch failed (exit code {rc}): {(err or out).strip()}")
    job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not job.isdigit():
        raise ExperimentError(f"sbatch did not print a job id: {out.strip()!r}")
    return job


def load_state(slurm_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        state = json.loads((slurm_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not {"job_id", "dir", "tasks"} <= set(state):
        return None
    return state


def shard_points(sub_dir: Path, task: str) -> List[Dict[str, Any]]:
    try:
        return json.loads((sub_dir / "shards" / f"{task}.json").read_text())
    except (OSError, ValueError):
        return []
