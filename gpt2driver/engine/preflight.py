"""Checks before an executable runs, and what to say when it cannot start.

This is the place for what can be known before spending GPU time: that the executable is there and
runnable, that the checkpoint fits what is asked of it. Each check raises the error the caller
would otherwise meet later, with the remedy in the message. :func:`check_run` is what the runner's
callers ask before a run; more checks (memory, device, context length) belong here.
"""

from __future__ import annotations

import os
from pathlib import Path
from ..errors import RunError


def cannot_start(path: Path, e: OSError) -> str:
    """The message for an executable the OS would not start."""
    hint = " (build it with: gpt2driver build)" if not Path(path).exists() else ""
    return f"cannot start {path}: {e.strerror or e}{hint}"


def check_executable(path: Path) -> None:
    """RunError unless ``path`` is a file this process may execute."""
    path = Path(path)
    if not path.is_file():
        raise RunError(cannot_start(path, FileNotFoundError(2, "No such file or directory")))
    if not os.access(path, os.X_OK):
        raise RunError(cannot_start(path, PermissionError(13, "Permission denied")))


def check_run(binary: Path) -> None:
    """Everything checked before ``binary`` runs."""
    check_executable(binary)
