"""gpt2driver run"""

from __future__ import annotations

import json

import click

from .. import names
from ..engine.generate import generate
from .options import (ablation, bin_dir_option, gpu_options, note, parse_id_list,
                      sampling_args, text_or_json)


@click.command()
@click.option("--variant", type=click.Choice(names.VARIANTS), default="optimized", show_default=True,
              help="Which executable generates.")
@click.option("--prompt", "prompt_text", help="Prompt text (tokenised with GPT-2's BPE).")
@click.option("--prompt-ids", help="Prompt token ids, comma or space separated.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=None,
              help="Synthetic prompt of N ids per row (instead of --prompt / --prompt-ids).")
@click.option("-b", "--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rows generated together (all get the same prompt).")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=64, show_default=True,
              help="New tokens per row.")
@click.option("--greedy", is_flag=True, help="Argmax decoding (the default without sampling options).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sample with this temperature [1.0 when sampling].")
@click.option("--top-k", type=click.IntRange(min=0), default=None, help="Sample among the K most likely (0 = off).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Nucleus sampling mass (1 = off).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Sampler seed [1337].")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False),
              help="llm.c tokenizer file [default: $GPT2DRIVER_TOKENIZER, else tiktoken's gpt2].")
@click.option("--ablate", default="none", show_default=True, metavar="NAME[+NAME]",
              help=f"optimized only: switches off ({', '.join(names.ABLATIONS)}, joined by +).")
@text_or_json
@bin_dir_option
@gpu_options
def run(variant, prompt_text, prompt_ids, prompt_len, batch, gen, greedy, temperature, top_k,
        top_p, seed, tokenizer, ablate, fmt, as_json, bin_dir, precision, cc, checkpoint, timeout):
    """Generate text with one variant and print it with the speed.

    Without --prompt, --prompt-ids or --prompt-len every row starts from the end-of-text token.
    """
    if sum(v is not None for v in (prompt_text, prompt_ids, prompt_len)) > 1:
        raise click.UsageError("give --prompt, --prompt-ids or --prompt-len, not both")
    if prompt_text == "":
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    ids = parse_id_list(prompt_ids) if prompt_ids is not None else None
    sampling = sampling_args(greedy, temperature, top_k, top_p)
    out = generate(variant, prompt_text, ids, batch, gen, sampling, seed, tokenizer, precision,
                   cc, checkpoint, timeout, note, ablate=ablation(ablate), prompt_len=prompt_len,
                   bin_dir=bin_dir)
    click.echo(json.dumps(out.to_dict(), indent=2) if as_json or fmt == "json" else out.report())
