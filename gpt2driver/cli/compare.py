"""gpt2driver compare"""

from __future__ import annotations

import click

from .. import names
from ..experiments.summary import check_failed
from ..experiments.compare import CompareOptions, ablation_options, compare_report, run_compare
from .options import (ablate_option, bin_dir_option, engine_arg_option, gpu_options, note,
                      output_format, variants_callback)


@click.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size.")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=256, show_default=True,
              help="New tokens per row.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=1, show_default=True,
              help="Synthetic prompt length.")
@click.option("--variants", default=",".join(names.VARIANTS), show_default=True,
              callback=variants_callback(names.VARIANTS),
              help="Comma-separated variants to compare (naive, kvonly, optimized).")
@click.option("--ablations", is_flag=True,
              help="The ablation table: optimized with all on and with each switch off alone "
                   f"({', '.join(names.ABLATIONS)}), tokens/s as a ratio to all on.")
@ablate_option
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed generations first.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed generations (median, min, max reported).")
@output_format
@bin_dir_option
@engine_arg_option
@gpu_options
def compare(batch, gen, prompt_len, variants, ablations, ablate, warmup, repeat, fmt, bin_dir,
            engine_args, precision, cc, checkpoint, timeout):
    """Time the variants on one configuration, with speedups.

    Runs naive, kvonly and optimized (or --variants) with the same batch, prompt and length and
    prints tokens/s (median, min, max over --repeat runs) and the speedup over naive. With
    --ablations (or --ablate NAME) it times optimized with its speed tricks switched off instead
    and prints each as a ratio of tokens/s to all on.
    """
    variant_list = list(variants)
    if ablations or ablate:
        variant_list = ["optimized"]
    opts = CompareOptions(variant_list, batch, gen, prompt_len, warmup, repeat, precision,
                          checkpoint, cc, timeout, ablation_options(ablate, ablations), bin_dir,
                          engine_args)
    df = run_compare(opts, log=note)
    click.echo(compare_report(df, fmt))
    check_failed(df, "run")
