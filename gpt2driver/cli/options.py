"""Options and value parsers shared by the commands."""

from __future__ import annotations

from typing import List

import click

from .. import names, progress
from ..engine import preflight
from ..errors import BadInput
from ..tables.printers import FORMATS

PRECISION = click.Choice([p.lower() for p in names.PRECISIONS], case_sensitive=False)


class Timeout(click.ParamType):
    """Seconds, in the one range of preflight.check_timeout (no inf, no nan)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        try:
            return preflight.check_timeout(value)
        except BadInput as e:
            self.fail(str(e).removeprefix("timeout: "), param, ctx)


TIMEOUT = Timeout()
CC = click.IntRange(min=names.MIN_CC, max=names.MAX_CC)
CC_HELP = (f"Compute capability as major*10+minor, e.g. 90 for H100, 80 for A100 ({names.MIN_CC} or "
           f"newer, as the Makefile needs)")


def cc_option(f):
    return click.option("--cc", type=CC, default=None,
                        help=f"{CC_HELP} [default: detected with nvidia-smi].")(f)


def variants_callback(allowed):
    """A click callback: comma-separated names of ``allowed`` (a usage error, exit 2, for an
    unknown one), in the given order, each once."""
    def check(ctx, param, value):
        try:
            return names.choices(allowed, value)
        except BadInput as e:
            raise click.BadParameter(str(e)) from None
    return check


def gpu_options(f):
    """--precision, --cc, --checkpoint, --timeout and --quiet, shared by the commands that run a
    GPU."""
    f = quiet_option(f)
    f = click.option("--timeout", type=TIMEOUT, default=600, show_default=True,
                     help=f"Seconds before a run of an executable is killed "
                          f"({preflight.TIMEOUT_MIN_S:g} to {preflight.TIMEOUT_MAX_S:g}).")(f)
    f = click.option("--checkpoint", "-e", type=click.Path(exists=True, dir_okay=False),
                     help="llm.c checkpoint [default: random GPT-2 124M, generated on first use].")(f)
    f = cc_option(f)
    f = click.option("--precision", type=PRECISION, default="bf16", show_default=True,
                     help="Build precision of the executables.")(f)
    return f


def quiet_option(f):
    """--quiet: no progress bars (they are drawn on stderr only when it is a terminal)."""
    def set_quiet(ctx, param, value):
        if value:
            progress.set_quiet(True)
        return value

    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_quiet,
                        help="No progress bars (there are none when stderr is not a "
                             "terminal).")(f)


def output_format(f):
    """-o / --output-format: how the table is printed (one printer per format)."""
    return click.option("-o", "--output-format", "fmt", type=click.Choice(FORMATS),
                        default="markdown", show_default=True,
                        help="Printed table: markdown, csv, json or jsonl.")(f)


def text_or_json(f):
    """-o / --output-format text|json: what is printed on stdout (as -o in every command that
    prints a result); --json, kept for scripts, is -o json."""
    f = click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as -o json.")(f)
    return click.option("-o", "--output-format", "fmt", type=click.Choice(["text", "json"]),
                        default="text", show_default=True,
                        help="Printed result: text, or json (the parsed result).")(f)


def bin_dir_option(f):
    return click.option("--bin-dir", type=click.Path(exists=True, file_okay=False),
                        help="Run the executables in this directory (another build tree, e.g. "
                             "/tmp/base/build/sm90_bf16) instead of building this one's.")(f)


def engine_arg_option(f):
    return click.option("--engine-arg", "engine_args", multiple=True, metavar="ARG",
                        help="Passed to the executable as is, after the driver's arguments "
                             "(repeatable; a diagnostic such as --one-layer-weights).")(f)


def ablation(value: str) -> str:
    """A click-level check of an ablation value (none, a switch name, or names joined by +)."""
    try:
        return names.ablation(value)
    except BadInput as e:
        raise click.BadParameter(str(e)) from None


def ablate_callback(ctx, param, values):
    return tuple(ablation(v) for v in values)


def ablate_option(f):
    switches = ", ".join(names.ABLATIONS)
    return click.option("--ablate", multiple=True, callback=ablate_callback, metavar="NAME[+NAME]",
                        help=f"Run optimized with these switches off (repeatable; one of "
                             f"{switches}, or several joined by +).")(f)


def parse_id_list(text: str) -> List[int]:
    try:
        ids = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"expected token ids separated by commas or spaces, got {text!r}",
                                 param_hint="--prompt-ids") from None
    if not ids or any(i < 0 for i in ids):
        raise click.BadParameter("expected one or more non-negative token ids",
                                 param_hint="--prompt-ids")
    return ids


def sampling_args(greedy: bool, temperature, top_k, top_p) -> dict:
    """engine_args keywords for the sampling options (greedy unless a sampling option is given)."""
    sampled = any(v is not None for v in (temperature, top_k, top_p))
    if greedy and sampled:
        raise click.UsageError("--greedy cannot be combined with --temperature/--top-k/--top-p")
    if not sampled:
        return {"greedy": True}
    return {"greedy": False, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def given(ctx: click.Context, *params: str) -> set:
    """The parameters the user set on the command line (not defaults)."""
    return {p for p in (params or ctx.params)
            if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT}


def note(msg: str) -> None:
    click.echo(msg, err=True)
