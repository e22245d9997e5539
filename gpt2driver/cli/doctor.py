"""gpt2driver doctor"""

from __future__ import annotations

import click

from .. import doctor as checks
from ..errors import DriverError


@click.command()
def doctor():
    """Check make, the compilers, cuBLAS, the GPU, profilers, Python packages, the tokenizer and
    what is built. Exits 1 when the executables cannot be built and run here, naming what is
    missing."""
    rows = checks.doctor_report()
    for r in rows:
        click.echo(f"{r.name:20} {r.status}")
    missing = checks.blocking(rows)
    if missing:
        raise DriverError(f"the engine cannot be built and run here: missing {', '.join(missing)} "
                          f"(see above)")
