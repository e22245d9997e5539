"""gpt2driver bench"""

from __future__ import annotations

import click

from .. import names
from ..experiments.bench.run import BenchOptions, run_bench
from ..experiments.summary import check_failed
from ..tables.printers import render
from .options import gpu_options, note, output_format, variants_callback


def peer_options(f):
    """The peers: Hugging Face (on by default) and a user's gpt2_optim / llm.c checkouts."""
    f = click.option("--llmc", type=click.Path(exists=True, file_okay=False),
                     help="The llm.c checkout gpt2_optim builds against [default: llm.c next to "
                          "the gpt2_optim checkout].")(f)
    f = click.option("--gpt2-optim", "gpt2optim", type=click.Path(exists=True, file_okay=False),
                     help="A gpt2_optim checkout: built with its Makefile (detected CC, BF16); adds "
                          "its naive and KV-cache rows at each B, timed by its own program.")(f)
    f = click.option("--hf-warmup", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Untimed compiled generate calls first (the first compiles); "
                          "hf-eager gets min(this, 1).")(f)
    f = click.option("--hf-compile/--no-hf-compile", default=True, show_default=True,
                     help="Also time generate with a static cache and torch.compile.")(f)
    return click.option("--no-hf", "no_hf", is_flag=True,
                        help="Leave out Hugging Face's GPT2LMHeadModel.generate.")(f)


@click.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), multiple=True,
              help="Batch size; repeat for several, e.g. -b 1 -b 2 ... -b 256 for the tokens/s "
                   "curve [1, 4, 16].")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=512, show_default=True,
              help="New tokens per row (after one start token).")
@click.option("--model", type=click.Choice(list(names.MODEL_SIZES)), default=names.DEFAULT_MODEL,
              show_default=True, help="GPT-2 size of the random weights (made once, cached under "
                                      "$GPT2DRIVER_HOME/models); not with --checkpoint.")
@click.option("--variants", default=",".join(names.VARIANTS), show_default=True,
              callback=variants_callback(names.VARIANTS),
              help="Comma-separated executables to time (naive, kvonly, optimized).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed generations of each executable first.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed generations of everything (median, min, max reported).")
@peer_options
@click.option("--copy-gbps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Copy bandwidth (GB/s) for the % of floor instead of measuring it with torch.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory [default: results/bench/<timestamp>/ in the repository]; "
                   "the same directory again resumes.")
@output_format
@gpu_options
def bench(batch, gen, model, variants, warmup, repeat, no_hf, hf_compile, hf_warmup, gpt2optim,
          llmc, copy_gbps, out, fmt, precision, cc, checkpoint, timeout):
    """Our executables against Hugging Face's GPT-2 (and gpt2_optim) on the same weights, and the
    decode floor.

    In one run on one GPU: naive, kvonly and optimized through the built executables (as a
    sweep runs them); with --gpt2-optim, gpt2_optim's naive and KV-cache rows (its own timing);
    then, where torch and transformers import and CUDA is available,
    GPT2LMHeadModel.generate built from the same checkpoint in the same precision: hf-eager
    (default dynamic cache) and hf-compiled (static cache + torch.compile of forward,
    mode reduce-overhead, fullgraph). All greedy, one start token (EOT), exactly --gen new
    tokens, batch B. Rows that cannot run say why (skipped / failed).

    The device-to-device copy bandwidth is measured with torch (1 GiB copy, bytes read +
    written, median of 20); each row's step time is compared with the decode floor: (weights
    + KV cache read at the mean position) / copy bandwidth. Prints a table (and the tokens/s
    curve for more than two B) and writes results.jsonl, results.csv, results.json, table.txt
    and tokens_per_s.png (tokens/s and % of floor against B) to the results directory; exits 1
    if a row failed.
    """
    if checkpoint and click.get_current_context().get_parameter_source("model").name != "DEFAULT":
        raise click.UsageError("give --model or --checkpoint, not both")
    opts = BenchOptions(batch or (1, 4, 16), gen, precision, variants, checkpoint, model, cc,
                        warmup, repeat, not no_hf, hf_compile, hf_warmup, copy_gbps, timeout,
                        out, gpt2optim, llmc)
    res = run_bench(opts, log=note)
    click.echo(res.table if fmt == "markdown" else render(res.df, fmt, meta=res.meta).rstrip())
    click.echo(res.plot_note or f"plot: {res.paths['plot']}", err=fmt != "markdown")
    click.echo(f"results: {res.paths['csv']} {res.paths['json']}", err=fmt != "markdown")
    check_failed(res.df, "row")
