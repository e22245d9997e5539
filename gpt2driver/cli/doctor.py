"""gpt2driver doctor"""

from __future__ import annotations

import click

from ..doctor import doctor_report


@click.command()
def doctor():
    """Check the toolchain, GPU, cuBLAS, profilers and what is built."""
    for name, status in doctor_report():
        click.echo(f"{name:20} {status}")
