"""The executor interface: run a sweep's points, appending each finished row to the store."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List

from ..pointrunner import PointRunner
from ..store import ResultsStore

Log = Callable[[str], None]
Point = Dict[str, Any]


def stderr_log(msg: str) -> None:
    """The default log: one line to stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


class Executor:
    """Runs the points of a sweep that the store does not hold as ok, appending their rows to it.

    ``labels`` maps point ids to the progress label of each point (``[3/9] optimized B=4 ...``).
    Ctrl-C stops the running points and raises :class:`gpt2driver.errors.Interrupted`; the rows
    finished before stay in the store.
    """

    def run(self, points: List[Point], store: ResultsStore, runner: PointRunner,
            labels: Dict[str, str], log: Log = stderr_log) -> None:
        raise NotImplementedError


def not_done(points: List[Point], store: ResultsStore, labels: Dict[str, str],
             log: Log) -> List[Point]:
    """The points to run; each one done earlier is logged as skipped."""
    done = store.ok_ids()
    todo = []
    for p in points:
        if p["id"] in done:
            log(f"{labels[p['id']]} ... done earlier, skipped")
        else:
            todo.append(p)
    return todo
