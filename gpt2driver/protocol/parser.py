"""The one reader of the executables' output (docs/protocol.md).

Every machine-readable line looks like ``##GPT2D <version> <record> key=value ...``. A value is a
bare word or a double-quoted string with ``\\"`` and ``\\\\`` escapes. Bare values that parse as
numbers become ``int``/``float``; unknown records and keys are kept but otherwise ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import PROTOCOL_VERSION
from ..errors import ProtocolError

PREFIX = "##GPT2D"

# Keys whose values are text even when they look like numbers (a checkpoint named "1e3").
STRING_KEYS = frozenset({"program", "variant", "precision", "device", "checkpoint", "msg", "name",
                         "result", "prompt", "ids", "ref_top3", "test_top3"})

EXIT_CODES = {
    0: "success",
    1: "validation failed (thresholds exceeded)",
    2: "bad command line",
    3: "bad input file (missing, truncated, wrong magic/version, sizes that disagree)",
    4: "CUDA / cuBLAS error or out of device memory",
}


@dataclass
class RunResult:
    """Everything one run of an executable reported."""

    config: Dict[str, Any] = field(default_factory=dict)
    memory: Dict[str, Any] = field(default_factory=dict)
    reps: List[Dict[str, Any]] = field(default_factory=list)
    timing: Dict[str, Any] = field(default_factory=dict)
    tokens: Dict[int, Tuple[List[int], List[int]]] = field(default_factory=dict)
    vsteps: List[Dict[str, Any]] = field(default_factory=list)
    vsummary: List[Dict[str, Any]] = field(default_factory=list)
    stages: List[Dict[str, Any]] = field(default_factory=list)
    profile: Dict[str, Any] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)
    done: Optional[int] = None
    text: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.done == 0 and not self.errors

    @property
    def error_message(self) -> str:
        return "; ".join(self.errors)

    def timed_reps(self) -> List[Dict[str, Any]]:
        """Reps that are not warm-ups."""
        return [r for r in self.reps if not r.get("warmup")]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable view (token rows keyed by string)."""
        d = asdict(self)
        d["tokens"] = {str(row): {"prompt": p, "ids": ids} for row, (p, ids) in self.tokens.items()}
        return d


# ------------------------------------------------------------------------------------------------
# Lines
# ------------------------------------------------------------------------------------------------


def _number(text: str) -> Any:
    """int, then float, else the text itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _split_fields(rest: str) -> List[Tuple[str, str, bool]]:
    """Split ``k=v k="quoted" ...`` into (key, value, was_quoted); raise ValueError if garbled."""
    out: List[Tuple[str, str, bool]] = []
    i, n = 0, len(rest)
    while i < n:
        if rest[i] == " ":
            i += 1
            continue
        eq = rest.find("=", i)
        if eq <= i:
            raise ValueError(f"expected key=value at column {i}")
        key = rest[i:eq]
        if any(c in key for c in ' "\\'):
            raise ValueError(f"bad key {key!r}")
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value for {key!r}")
                c = rest[i]
                if c == "\\":
                    if i + 1 >= n or rest[i + 1] not in '"\\':
                        raise ValueError(f"bad escape in value of {key!r}")
                    buf.append(rest[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            if i < n and rest[i] != " ":
                raise ValueError(f"no space after quoted value of {key!r}")
            out.append((key, "".join(buf), True))
        else:
            end = rest.find(" ", i)
            end = n if end < 0 else end
            value = rest[i:end]
            if '"' in value:
                raise ValueError(f"stray quote in value of {key!r}")
            out.append((key, value, False))
            i = end
    return out


def parse_line(line: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``(record, fields)`` for a protocol line, None for human text; ProtocolError if garbled."""
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return None
    parts = line.split(" ", 3)
    if parts[0] != PREFIX or len(parts) < 3:
        raise ProtocolError(f"garbled result line: {line!r}")
    try:
        version = int(parts[1])
    except ValueError:
        raise ProtocolError(f"garbled result line (bad version): {line!r}") from None
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"output uses protocol version {version}, this driver reads version "
                            f"{PROTOCOL_VERSION}: rebuild the executables (gpt2driver build) or "
                            f"update the driver")
    record = parts[2]
    if not record or not record.replace("_", "").isalnum():
        raise ProtocolError(f"garbled result line (bad record name): {line!r}")
    try:
        raw = _split_fields(parts[3] if len(parts) > 3 else "")
    except ValueError as e:
        raise ProtocolError(f"garbled result line ({e}): {line!r}") from None
    fields = {k: (v if quoted or k in STRING_KEYS else _number(v)) for k, v, quoted in raw}
    return record, fields


def parse_ids(value: Any) -> List[int]:
    """A comma-separated id list (``""`` = empty) as ints."""
    if isinstance(value, int):
        return [value]
    text = str(value).strip()
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise ProtocolError(f"bad id list: {text!r}") from None


def parse_top3(value: Any) -> List[Tuple[int, float]]:
    """``id:logit;id:logit;...`` as [(id, logit), ...]."""
    out = []
    for item in str(value).split(";"):
        if item:
            tok, _, logit = item.partition(":")
            try:
                out.append((int(tok), float(logit)))
            except ValueError:
                raise ProtocolError(f"bad top-3 list: {value!r}") from None
    return out


# ------------------------------------------------------------------------------------------------
# Whole outputs
# ------------------------------------------------------------------------------------------------

_LIST_RECORDS = {"rep": "reps", "vstep": "vsteps", "vsummary": "vsummary", "stage": "stages"}
_DICT_RECORDS = {"config": "config", "memory": "memory", "timing": "timing", "profile": "profile"}


def parse_output(text: str, require_done: bool = True) -> RunResult:
    """Parse a whole stdout; ProtocolError on a garbled line or (by default) no ``done`` line."""
    res = RunResult()
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            if line.strip():
                res.text.append(line)
            continue
        record, f = parsed
        if record in _LIST_RECORDS:
            getattr(res, _LIST_RECORDS[record]).append(f)
        elif record in _DICT_RECORDS:
            getattr(res, _DICT_RECORDS[record]).update(f)
        elif record == "tokens":
            if "row" not in f:
                raise ProtocolError(f"tokens record without row: {line!r}")
            res.tokens[int(f["row"])] = (parse_ids(f.get("prompt", "")), parse_ids(f.get("ids", "")))
        elif record == "error":
            res.errors.append(str(f.get("msg", "")))
        elif record == "done":
            status = f.get("status")
            if not isinstance(status, int):
                raise ProtocolError(f"done record without an integer status: {line!r}")
            res.done = status
    if require_done and res.done is None:
        raise ProtocolError("output ended without a done line (the program stopped early)")
    return res


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def records_frame(records: List[Dict[str, Any]]):
    """A pandas DataFrame of a list of records (columns in first-seen order)."""
    import pandas as pd

    return pd.DataFrame.from_records(records)


def reps_frame(res: RunResult):
    return records_frame(res.reps)


def vsteps_frame(res: RunResult):
    return records_frame(res.vsteps)


def stages_frame(res: RunResult):
    return records_frame(res.stages)


def tokens_per_s(res: RunResult) -> Dict[str, float]:
    """median/min/max tokens/s over the timed reps (from each rep's total_ms)."""
    reps = res.timed_reps() or res.reps
    b, g = res.config.get("B"), res.config.get("gen")
    vals = []
    for r in reps:
        ms = r.get("total_ms")
        if isinstance(b, int) and isinstance(g, int) and isinstance(ms, (int, float)) and ms > 0:
            vals.append(b * g / ms * 1000.0)
        elif isinstance(r.get("tokens_per_s"), (int, float)):
            vals.append(float(r["tokens_per_s"]))
    if not vals:
        tps = res.timing.get("tokens_per_s")
        vals = [float(tps)] if isinstance(tps, (int, float)) else []
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    vals.sort()
    mid = len(vals) // 2
    median = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return {"median": median, "min": vals[0], "max": vals[-1]}
