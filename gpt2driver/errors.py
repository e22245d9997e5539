"""The driver's errors: one base class, a few kinds.

Every error the driver means to report derives from :class:`DriverError`, which carries the message
and the exit code of the command line. ``gpt2driver.cli.main`` turns one into a single line
``Error: <first line of the message>`` on stderr (further lines of the message, such as the tail of
make's output, follow indented) and exits with ``exit_code``; nothing else in the package prints
errors or picks exit codes.

The kinds keep the base classes they had (``ValueError`` for bad input) so that ``except ValueError``
around file parsing still holds.
"""

from __future__ import annotations

from typing import Any, Optional


class DriverError(Exception):
    """An error the driver reports as one line and an exit code (default 1)."""

    exit_code = 1

    def __init__(self, message: Any = "", exit_code: Optional[int] = None):
        super().__init__(str(message))
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class BadInput(DriverError, ValueError):
    """A value, name or file that does not follow its format (a config key, a checkpoint, a
    tokenizer file, a precision)."""


class ConfigError(BadInput):
    """A sweep configuration that does not follow the schema."""


class CheckpointError(BadInput):
    """A checkpoint file or a set of parameters is missing, malformed or inconsistent."""


class TokenizerError(BadInput):
    """A tokenizer file is missing or malformed, or no encoding could be obtained."""


class RequestError(BadInput):
    """A request that does not fit the model: prompt ids outside its vocabulary, a prompt and
    length beyond its context. A bad command line, as for the executables (exit code 2)."""

    exit_code = 2


class ProtocolError(BadInput):
    """Output that does not follow docs/protocol.md."""


class BuildError(DriverError):
    """make failed, or is missing, or did not produce the executables. ``cause``: why, in one
    line (the Makefile's message or the compiler's last errors), for rows and progress lines."""

    def __init__(self, message: Any = "", exit_code: Optional[int] = None, *, cause: str = ""):
        super().__init__(message, exit_code)
        self.cause = cause or (str(message).strip().splitlines() or [""])[0]


class RunError(DriverError):
    """An executable (or a tool around it) failed: timeout, crash, non-zero exit, unreadable output."""

    def __init__(self, message: Any, *, returncode: Optional[int] = None, stderr_tail: str = "",
                 result: Any = None):
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.result = result


class ProfilingError(DriverError):
    """A profiler is missing, refused, captured nothing, or wrote something unreadable."""


class ExperimentError(DriverError):
    """A sweep, compare or bench cannot start or go on (no GPU, a results directory that cannot be
    made, a Slurm command that does not answer, a peer that does not build)."""


SweepError = ExperimentError  # the name the sweep's callers know


class Interrupted(ExperimentError):
    """Ctrl-C: the running work was stopped, what finished is kept (exit code 130)."""

    exit_code = 130


SweepInterrupted = Interrupted


class BenchError(ExperimentError):
    """A part of the benchmark cannot run (no CUDA, no torch...)."""


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (for rows that record why something failed)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
