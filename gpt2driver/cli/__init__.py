"""The command line: one module per command (or small group), each a thin click function over
the package's code; :mod:`.main` builds the group and maps errors to exit codes."""

from .main import cli, main

__all__ = ["cli", "main"]
