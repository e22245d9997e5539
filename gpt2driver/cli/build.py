"""gpt2driver build"""

from __future__ import annotations

import click

from ..engine import build as build_mod
from ..names import PROGRAMS
from .options import PRECISION, cc_option, quiet_option


@click.command()
@cc_option
@click.option("--precision", type=PRECISION, default="bf16", show_default=True,
              help="Precision of weights and activations.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Parallel make jobs [default: CPU count].")
@click.option("-v", "--verbose", is_flag=True,
              help="Show make's output as it comes (instead of a progress bar).")
@quiet_option
def build(cc, precision, jobs, verbose):
    """Compile the executables with make (only what is out of date).

    They land in build/sm<CC>_<precision>/ ($GPT2DRIVER_BUILD_DIR replaces build/). A failed
    build says why in one line (the Makefile's reason or the compiler's errors) with the tail of
    make's output.
    """
    if cc is None:
        cc = build_mod.resolve_cc(None)
        click.echo(f"detected compute capability {cc // 10}.{cc % 10} (sm{cc})")
    res = build_mod.make_build(cc, precision, jobs=jobs, quiet=not verbose)
    click.echo(f"rebuilt: {', '.join(res.rebuilt)}" if res.rebuilt else "up to date")
    click.echo(f"executables in {res.path}: {', '.join(PROGRAMS)}")
