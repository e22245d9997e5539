"""Progress bars for long work: builds, checkpoint writing, sweeps, comparisons and bench.

One mechanism: :func:`bar` is a context manager that yields something to ``advance()`` and
``describe()``. It draws rich's progress bar on stderr only when stderr is a terminal and the
command did not get ``--quiet`` (:func:`set_quiet`); otherwise it draws nothing and costs nothing.
Bars opened inside another (a build inside a sweep) become one more line of the same display. While
a bar is shown, what is written to stderr (the progress lines) goes above it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator, Optional

_state = {"quiet": False, "progress": None, "depth": 0}
_lock = threading.RLock()


def set_quiet(quiet: bool = True) -> None:
    """``--quiet``: no progress bars in this process."""
    _state["quiet"] = bool(quiet)


def is_terminal() -> bool:
    """True when stderr is a terminal (a person is watching)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def enabled() -> bool:
    """Whether bars are drawn: stderr is a terminal and --quiet was not given."""
    return not _state["quiet"] and (_state["progress"] is not None or is_terminal())


class Bar:
    """One task of the display (or nothing, when bars are off)."""

    def __init__(self, progress=None, task=None):
        self.progress, self.task = progress, task

    def advance(self, n: float = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def total(self, total: Optional[float]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)


def _new_progress():
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    console = Console(file=sys.stderr, force_terminal=True)
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                    redirect_stdout=False, redirect_stderr=True)


@contextlib.contextmanager
def bar(description: str, total: Optional[float] = None) -> Iterator[Bar]:
    """A progress bar of ``total`` steps (None: a spinner and a count) for the duration."""
    if not enabled():
        yield Bar()
        return
    with _lock:
        outer = _state["progress"] is None
        if outer:
            _state["progress"] = _new_progress()
            _state["progress"].start()
        progress = _state["progress"]
        task = progress.add_task(description, total=total)
    try:
        yield Bar(progress, task)
    finally:
        with _lock:
            progress.remove_task(task)
            if outer:
                progress.stop()
                _state["progress"] = None
