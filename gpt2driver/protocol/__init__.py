"""The one reader of the executables' ``##GPT2D`` result lines (docs/protocol.md)."""

from ..errors import ProtocolError
from .parser import (EXIT_CODES, PREFIX, STRING_KEYS, RunResult, parse_ids, parse_line,
                     parse_output, parse_top3, records_frame, reps_frame, stages_frame,
                     tokens_per_s, vsteps_frame)

__all__ = ["EXIT_CODES", "PREFIX", "ProtocolError", "STRING_KEYS", "RunResult", "parse_ids", "parse_line",
           "parse_output", "parse_top3", "records_frame", "reps_frame", "stages_frame",
           "tokens_per_s", "vsteps_frame"]
