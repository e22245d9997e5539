"""The results store: ``results.jsonl`` (the record, append-only, one row per line, fsynced) and the
views rewritten from it atomically after every append (``results.csv``, ``results.json``, and what
the owner of the store adds). The reading and appending of jsonl files lives here alone: the
store's record, the Slurm tasks' result files (:class:`JsonlTail` reads them as they grow).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from ..errors import ExperimentError
from ..files.atomic import atomic_write_text
from ..tables.printers import render
from .summary import frame as sweep_frame

Row = Dict[str, Any]
Views = Callable[[List[Row]], None]


def _rows_of(text: str) -> List[Row]:
    """The rows of complete lines (a torn last line, and lines that are not rows, left out)."""
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


def read_jsonl(path: Path) -> List[Row]:
    """Every complete row of a jsonl file, in order (none when it does not exist)."""
    try:
        return _rows_of(Path(path).read_text())
    except OSError:
        return []


def append_jsonl(path: Path, rows: Iterable[Row]) -> None:
    """Append rows, one JSON line each, and fsync (NaN is not JSON: the rows must be clean)."""
    text = "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in rows)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def latest(rows: Iterable[Row]) -> List[Row]:
    """The last row of each id, in the order of those last rows."""
    out: Dict[str, Row] = {}
    for row in rows:
        out.pop(row["id"], None)
        out[row["id"]] = row
    return list(out.values())


class JsonlTail:
    """Reads a jsonl file as it grows: each :meth:`poll` returns the complete rows written since
    the last one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def poll(self) -> List[Row]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # complete lines only
        self.offset += end
        return _rows_of(data[:end].decode("utf-8", "replace"))


def table_views(out_dir: Path, frame: Callable[[List[Row]], Any]) -> Views:
    """Views that write ``frame(rows)`` as results.csv and results.json (a list of rows)."""
    def write(rows: List[Row]) -> None:
        df = frame(rows)
        atomic_write_text(Path(out_dir) / "results.csv", render(df, "csv"))
        atomic_write_text(Path(out_dir) / "results.json", render(df, "json"))
    return write


class ResultsStore:
    """results.jsonl plus its views. ``views(rows)`` rewrites the views from the recorded rows
    (latest per id); the default writes the sweep's view (:func:`gpt2driver.experiments.summary.frame`).

    Appends from several threads of one process are serialized by a lock (the line append and
    the rewrite of the views happen together).
    """

    def __init__(self, out_dir: Path, views: Optional[Views] = None):
        self.dir = Path(out_dir)
        self.jsonl = self.dir / "results.jsonl"
        self.csv = self.dir / "results.csv"
        self.json = self.dir / "results.json"
        self.lock = threading.RLock()
        self.views = views or table_views(self.dir, sweep_frame)

    def check_writable(self) -> None:
        """ExperimentError unless the results directory can be made and written (its record
        appended to, its views replaced): asked before the first point runs."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=self.dir)
            os.close(fd)
            os.unlink(probe)
            with open(self.jsonl, "a"):
                pass
        except OSError as e:
            raise ExperimentError(f"cannot write to the results directory {self.dir}: "
                                  f"{e.strerror or e}") from None

    def rows(self) -> List[Row]:
        """Recorded rows, the latest per point id; a torn last line is ignored."""
        return latest(read_jsonl(self.jsonl))

    def ok_ids(self) -> set:
        return {r["id"] for r in self.rows() if r.get("status") == "ok"}

    def append(self, row: Row) -> None:
        self.extend([row])

    def extend(self, rows: List[Row]) -> None:
        """Append rows to the record, then rewrite the views once."""
        if not rows:
            return
        with self.lock:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                append_jsonl(self.jsonl, rows)
            except OSError as e:
                raise ExperimentError(f"cannot record a result in {self.jsonl}: "
                                      f"{e.strerror or e}") from None
            self.rewrite()

    def rewrite(self) -> None:
        with self.lock:
            try:
                self.views(self.rows())
            except OSError as e:
                where = getattr(e, "filename", None) or self.dir
                raise ExperimentError(f"cannot write {where}: {e.strerror or e}") from None
