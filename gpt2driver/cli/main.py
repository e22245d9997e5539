"""The ``gpt2driver`` command group, and the one place where errors become a line and an exit code.

A :class:`~gpt2driver.errors.DriverError` (or an OSError, or Ctrl-C) that leaves a command is
written as ``Error: <first line>`` on stderr, with any further lines of the message indented below
it, and the process exits with the error's ``exit_code`` (Ctrl-C: 130). Usage errors stay click's
(exit 2).
"""

from __future__ import annotations

from typing import NoReturn, Optional, Sequence

import click

from .. import __version__, progress
from ..errors import DriverError
from . import bench, compare, doctor, files, profile, run, sweep, validate
from . import build as build_cmd


def fail(message: str, exit_code: int) -> NoReturn:
    lines = str(message).strip().splitlines() or ["(no message)"]
    click.echo(f"Error: {lines[0]}", err=True)
    for line in lines[1:]:
        click.echo(f"  {line}", err=True)
    raise click.exceptions.Exit(exit_code)


class DriverGroup(click.Group):
    """A click group whose commands' errors leave through :func:`fail`."""

    def invoke(self, ctx: click.Context):
        progress.set_quiet(False)  # until this command's --quiet says otherwise
        try:
            return super().invoke(ctx)
        except DriverError as e:
            fail(e.message, e.exit_code)
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            fail(f"{where}{e.strerror or e}", 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)


@click.group(cls=DriverGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpt2driver")
def cli():
    """Build, run, validate, sweep and profile the CUDA GPT-2 inference engine.

    Three variants are built per GPU and precision: naive (no KV cache), kvonly (KV cache, plain
    kernels) and optimized (KV cache plus CUDA graphs, fused and small-batch kernels). Start with
    `gpt2driver doctor`, then `gpt2driver build` and `gpt2driver compare`.
    """


for command in (build_cmd.build, run.run, compare.compare, validate.validate, sweep.sweep,
                bench.bench, profile.profile, files.checkpoint, files.tokenizer, doctor.doctor):
    cli.add_command(command)


def main(argv: Optional[Sequence[str]] = None):
    """Entry point of the gpt2driver script."""
    return cli.main(args=list(argv) if argv is not None else None, prog_name="gpt2driver")
