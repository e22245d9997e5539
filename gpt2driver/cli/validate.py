"""gpt2driver validate"""

from __future__ import annotations

import click

from .. import names
from ..engine.generate import validate as run_validate, validation_passed
from ..tables.validation import validation_report
from .options import ablation, bin_dir_option, gpu_options, note, variants_callback


@click.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), default=2, show_default=True, help="Batch size.")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=128, show_default=True,
              help="Steps checked.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=None,
              help="Synthetic prompt length [one EOT token].")
@click.option("--variants", default="kvonly,optimized", show_default=True, callback=variants_callback(names.CACHED_VARIANTS),
              help="Cached variants checked against naive.")
@click.option("--max-abs", type=click.FloatRange(min=0), default=None,
              help="Max |logit difference| allowed at any step, >= 0 [by precision].")
@click.option("--max-rmse", type=click.FloatRange(min=0), default=None,
              help="Max per-step RMSE of the logits, >= 0 [by precision].")
@click.option("--min-match", type=click.FloatRange(0, 1), default=None,
              help="Min fraction of (step, row) pairs whose argmax agrees with naive, 0 to 1 "
                   "[by precision].")
@click.option("--worst", type=click.IntRange(min=0), default=5, show_default=True,
              help="Worst steps shown per variant.")
@click.option("--ablate", default="none", show_default=True, metavar="NAME[+NAME]",
              help="Switches off in the optimized runner checked (e.g. graph, graph+pdl).")
@bin_dir_option
@gpu_options
def validate(batch, gen, prompt_len, variants, max_abs, max_rmse, min_match, worst, ablate,
             bin_dir, precision, cc, checkpoint, timeout):
    """Check the cached variants against naive, step by step.

    naive chooses the tokens (greedy); kvonly/optimized are fed the same tokens and their logits
    are compared with naive's at every step (max |diff|, RMSE, argmax agreement). Exits 0 on PASS, 1 on FAIL (the validate executable's code).
    """
    tolerances = {"--max-abs": max_abs, "--max-rmse": max_rmse, "--min-match": min_match}
    res = run_validate(batch, gen, prompt_len, ",".join(variants), tolerances, precision, cc, checkpoint,
                       timeout, note, ablate=ablation(ablate), bin_dir=bin_dir)
    click.echo(validation_report(res, worst))
    ok = validation_passed(res)
    click.echo("PASS" if ok else "FAIL")
    click.get_current_context().exit(res.done or (0 if ok else 1))
