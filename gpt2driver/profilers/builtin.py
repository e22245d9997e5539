"""The profile executable's own stage timer (``--builtin``: CUDA events around each stage)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Sequence

from ..engine.runner import run_binary
from ..errors import ProfilingError
from ..protocol import RunResult
from .common import ProfileReport, write_text
from .tables import BASE_COLUMNS, finish, to_number


def builtin_table(result: RunResult):
    """The ``stage`` lines of ``profile --builtin`` as the common table (share as a fraction)."""
    import pandas as pd

    if not result.stages:
        raise ProfilingError("profile --builtin printed no stage lines")
    rows = [{"name": str(s.get("name")), "calls": to_number(s.get("calls", 0)),
             "total_us": to_number(s.get("total_ms")) * 1e3, "mean_us": to_number(s.get("mean_us")),
             "given": to_number(s.get("share"))} for s in result.stages]
    df = finish(pd.DataFrame.from_records(rows), int(result.profile.get("steps") or 1), BASE_COLUMNS)
    given = df.pop("given")
    scale = 0.01 if given.sum() > 1.5 else 1.0  # a fraction, or already a percentage
    df["share"] = (given * scale).fillna(df["share"])
    return df


def run_builtin(binary: Path, args: Sequence[str], out_dir: Path, timeout: float) -> ProfileReport:
    """profile --builtin (CUDA events per stage); RunError from runner on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), *map(str, args)]
    write_text(out_dir / "builtin.cmd.txt", shlex.join(cmd) + "\n")
    res = run_binary(binary, list(args), timeout=timeout)
    write_text(out_dir / "builtin.result.json", json.dumps(res.to_dict(), indent=2, default=str))
    table = builtin_table(res)
    steps = int(res.profile.get("steps") or 1)
    step_ms = res.profile.get("step_ms")
    step_us = float(step_ms) * 1e3 if isinstance(step_ms, (int, float)) else None
    return ProfileReport("builtin", table, steps, out_dir, res, None, step_us, [cmd])
