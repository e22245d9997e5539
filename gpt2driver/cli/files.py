"""gpt2driver checkpoint random|convert|info, gpt2driver tokenizer export"""

from __future__ import annotations

import json

import click

from ..errors import CheckpointError
from ..files.checkpoint import ModelConfig, checkpoint_info, make_random_checkpoint
from ..files.convert import convert_hf
from ..files.tokenizer import export_tiktoken
from ..names import DEFAULT_MODEL, MODEL_SIZES


@click.group()
def checkpoint():
    """Create, convert and inspect llm.c checkpoint files."""


def _print_info(path) -> dict:
    info = checkpoint_info(path)
    for k, v in info.items():
        if k != "error" and v is not None:
            click.echo(f"{k:18} {v}")
    return info


@checkpoint.command("random")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Choice(list(MODEL_SIZES)),
              default=None, help="GPT-2 size [gpt2 unless --layers/--heads/--channels].")
@click.option("--layers", type=click.IntRange(min=1), help="Custom shape: layers.")
@click.option("--heads", type=click.IntRange(min=1), help="Custom shape: attention heads.")
@click.option("--channels", type=click.IntRange(min=1), help="Custom shape: channels.")
@click.option("--max-seq-len", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Custom shape: context length.")
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True,
              help="Stored tensor type (version 5 = bf16, 3 = fp32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def checkpoint_random(out, model, layers, heads, channels, max_seq_len, dtype, seed):
    """Write a checkpoint with random GPT-2-like weights to OUT."""
    custom = [layers, heads, channels]
    if model and any(v is not None for v in custom):
        raise click.UsageError("give --model or --layers/--heads/--channels, not both")
    if any(v is not None for v in custom) and not all(v is not None for v in custom):
        raise click.UsageError("a custom shape needs all of --layers, --heads and --channels")
    cfg = (ModelConfig.custom(layers, heads, channels, max_seq_len=max_seq_len)
           if layers is not None else ModelConfig.preset(model or DEFAULT_MODEL))
    make_random_checkpoint(out, cfg, dtype=dtype, seed=seed)
    _print_info(out)


@checkpoint.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Stored tensor type.")
def checkpoint_convert(src, out, dtype):
    """Convert Hugging Face GPT-2 weights (a directory with model.safetensors) to OUT."""
    convert_hf(src, out, dtype=dtype)
    _print_info(out)


@checkpoint.command("info")
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def checkpoint_info_cmd(file, as_json):
    """Show a checkpoint's header and check its size; exits 1 if it is not valid."""
    if as_json:
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
