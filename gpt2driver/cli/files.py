"""gpt2driver checkpoint random|convert|info, gpt2driver tokenizer export"""

from __future__ import annotations

import json
import os

import click

from ..errors import CheckpointError
from ..files.checkpoint import ModelConfig, checkpoint_info, make_random_checkpoint
from ..files.convert import convert_hf
from ..files.tokenizer import export_tiktoken
from ..names import DEFAULT_MODEL, MODEL_SIZES
from .options import quiet_option, text_or_json


@click.group()
def checkpoint():
    """Create, convert and inspect llm.c checkpoint files."""


def _print_info(path) -> dict:
    info = checkpoint_info(path)
    for k, v in info.items():
        if k != "error" and v is not None:
            click.echo(f"{k:18} {v}")
    return info


def dtype_option(f):
    return click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16",
                        show_default=True,
                        help="Stored tensor type: bf16 (version 5, what BF16 and FP16 builds read) "
                             "or fp32 (version 3, what FP32 builds read).")(f)


def force_option(f):
    return click.option("--force", is_flag=True, help="Replace OUT if it exists.")(f)


def refuse_existing(out, force: bool) -> None:
    if os.path.lexists(out) and not force:
        raise click.UsageError(f"{out} exists: give --force to replace it")


@checkpoint.command("random")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Choice(list(MODEL_SIZES)),
              default=None, help="GPT-2 size [gpt2 unless --layers/--heads/--channels].")
@click.option("--layers", type=click.IntRange(min=1), help="Custom shape: layers.")
@click.option("--heads", type=click.IntRange(min=1), help="Custom shape: attention heads.")
@click.option("--channels", type=click.IntRange(min=1), help="Custom shape: channels.")
@click.option("--max-seq-len", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Custom shape: context length.")
@dtype_option
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@force_option
@quiet_option
def checkpoint_random(out, model, layers, heads, channels, max_seq_len, dtype, seed, force):
    """Write a checkpoint with random GPT-2-like weights to OUT (a shape the engine runs: head
    size channels / heads of 32, 64 or 128)."""
    custom = [layers, heads, channels]
    if model and any(v is not None for v in custom):
        raise click.UsageError("give --model or --layers/--heads/--channels, not both")
    if any(v is not None for v in custom) and not all(v is not None for v in custom):
        raise click.UsageError("a custom shape needs all of --layers, --heads and --channels")
    try:  # a shape the header cannot hold is a bad request, like one the engine cannot run (exit 2)
        cfg = (ModelConfig.custom(layers, heads, channels, max_seq_len=max_seq_len)
               if layers is not None else ModelConfig.preset(model or DEFAULT_MODEL))
    except CheckpointError as e:
        raise click.UsageError(str(e)) from None
    if cfg.engine_problem():
        raise click.UsageError(f"the engine cannot run this shape: {cfg.engine_problem()}")
    refuse_existing(out, force)
    make_random_checkpoint(out, cfg, dtype=dtype, seed=seed)
    _print_info(out)


@checkpoint.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@dtype_option
@force_option
@quiet_option
def checkpoint_convert(src, out, dtype, force):
    """Convert Hugging Face GPT-2 weights (a directory with model.safetensors) to OUT."""
    refuse_existing(out, force)
    convert_hf(src, out, dtype=dtype)
    _print_info(out)


@checkpoint.command("info")
@click.argument("file", type=click.Path())
@text_or_json
def checkpoint_info_cmd(file, fmt, as_json):
    """Show a checkpoint's header and check its size, and whether the engine runs its shape;
    exits 1 if it is not valid."""
    if as_json or fmt == "json":
        info = checkpoint_info(file)
        click.echo(json.dumps(info, indent=2))
    else:
        info = _print_info(file)
    if not info.get("ok"):
        raise CheckpointError(info.get("error") or f"{file}: not a valid checkpoint")


@click.group()
def tokenizer():
    """llm.c tokenizer files."""


@tokenizer.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
def tokenizer_export(out):
    """Write GPT-2's tokenizer (from tiktoken) as an llm.c tokenizer file OUT."""
    click.echo(f"wrote {export_tiktoken(out)}")
