"""The default executor: one point after the other on the default GPU."""

from __future__ import annotations

from typing import Dict, List

from ... import progress
from ...errors import Interrupted
from ...tables.views import progress_line
from ..pointrunner import PointRunner
from ..store import ResultsStore
from .base import Executor, Log, Point, not_done, stderr_log


class Serial(Executor):
    def run(self, points: List[Point], store: ResultsStore, runner: PointRunner,
            labels: Dict[str, str], log: Log = stderr_log) -> None:
        finished = 0
        todo = not_done(points, store, labels, log)
        try:
            with progress.bar("sweep", len(todo)) as shown:
                for p in todo:
                    shown.describe(labels[p["id"]])
                    row = runner.run(p)
                    store.append(row)
                    finished += 1
                    shown.advance()
                    log(progress_line(labels[p["id"]], row))
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {finished} point(s) finished in this run are kept in "
                              f"{store.jsonl}; rerun the same command to resume") from None
