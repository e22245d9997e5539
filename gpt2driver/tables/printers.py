"""One printer per output format: markdown (a GitHub table), csv, json, jsonl.

:func:`render` takes a DataFrame of rows and the name of a format (``-o``); the markdown printer
also takes the columns to show (:class:`Column`: which field, its header, how a value is written).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

FORMATS = ("markdown", "csv", "json", "jsonl")

Fmt = Union[None, str, Callable[[Any, Mapping[str, Any]], str]]


@dataclass(frozen=True)
class Column:
    """A markdown column: ``key`` of the row, ``header``, ``fmt`` (a format string such as
    ``"{:.1f}"``, a function of (value, row), or None for str), alignment."""

    key: str
    header: str
    fmt: Fmt = None
    align: str = "right"


def blank(v: Any) -> bool:
    """None, NaN or an empty string: shown as an empty cell."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def num(v: Any, fmt: str = "{:.1f}") -> str:
    """A number for a table; blank for None/NaN."""
    return "" if blank(v) else fmt.format(v)


def cell(col: Column, row: Mapping[str, Any]) -> str:
    v = row.get(col.key)
    if callable(col.fmt):
        return col.fmt(v, row)
    if blank(v):
        return ""
    return col.fmt.format(v) if col.fmt else str(v)


def markdown(records: Iterable[Mapping[str, Any]], columns: Sequence[Column],
             empty: str = "(no results)") -> str:
    """The rows as a GitHub-style table of ``columns``; ``empty`` when there are none."""
    from tabulate import tabulate

    records = list(records)
    if not records:
        return empty
    body = [[cell(c, r) for c in columns] for r in records]
    return tabulate(body, headers=[c.header for c in columns], tablefmt="github",
                    disable_numparse=True, colalign=[c.align for c in columns])


def grid(body: Sequence[Sequence[Any]], headers: Sequence[str], floatfmt: str = "g") -> str:
    """Plain rows of values as a GitHub-style table (numbers formatted by tabulate)."""
    from tabulate import tabulate

    return tabulate(body, headers=headers, tablefmt="github", floatfmt=floatfmt)


def records(df) -> List[Dict[str, Any]]:
    """A DataFrame's rows as JSON-ready dicts (NaN -> None)."""
    return json.loads(df.to_json(orient="records"))


def render(df, fmt: str = "markdown", columns: Optional[Sequence[Column]] = None,
           meta: Optional[Mapping[str, Any]] = None) -> str:
    """``df`` in one of :data:`FORMATS`. json: a list of rows, or ``{"meta": ..., "rows": [...]}``
    when ``meta`` is given; jsonl: one row per line; markdown needs ``columns``."""
    if fmt == "markdown":
        if columns is None:
            columns = [Column(c, c) for c in df.columns]
        return markdown(df.to_dict("records"), columns)
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        if meta is not None:
            return json.dumps({"meta": meta, "rows": records(df)}, indent=2, default=str) + "\n"
        return df.to_json(orient="records", indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, default=str) + "\n" for r in records(df))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_out(path: str, text: str, echo: Callable[[str], None]) -> None:
    """``text`` to the file ``path``, or through ``echo`` for ``-`` (stdout)."""
    if path == "-":
        echo(text)
    else:
        Path(path).write_text(text)
