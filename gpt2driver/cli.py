"""The ``gpt2driver`` command line: build, run, compare, validate, sweep, profile, and helpers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click

from . import __version__
from . import build as build_mod
from .checkpoint import PRESETS
from .runner import PROGRAMS, VARIANTS, RunError, build_root, repo_root, run_binary

PRECISION = click.Choice(["fp32", "fp16", "bf16"], case_sensitive=False)


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def _fail(msg: str) -> click.ClickException:
    return click.ClickException(str(msg))


def _note(msg: str) -> None:
    click.echo(msg, err=True)


def resolve_cc(cc: Optional[int]) -> int:
    """The given compute capability, or GPU 0's (nvidia-smi)."""
    if cc is not None:
        return cc
    found, reason = build_mod.detect_cc()
    if found is None:
        raise _fail(f"cannot detect the GPU's compute capability: {reason}; pass --cc (e.g. --cc 90)")
    return found


def ensure_built(cc: int, precision: str, jobs: Optional[int] = None) -> Path:
    """Run make for (cc, precision) (a no-op when up to date); the executables' directory."""
    try:
        res = build_mod.make_build(cc, precision, jobs=jobs, quiet=True)
    except build_mod.BuildError as e:
        raise _fail(e) from None
    if res.rebuilt:
        _note(f"built {', '.join(res.rebuilt)} in {res.path}")
    return res.path


def resolve_checkpoint(checkpoint: Optional[str], precision: str) -> Path:
    """The given checkpoint, or the default random GPT-2 124M (generated on first use)."""
    from .checkpoint import CheckpointError, ensure_default_model

    if checkpoint:
        return Path(checkpoint)
    try:
        path = ensure_default_model(precision)
    except (CheckpointError, OSError) as e:
        raise _fail(f"cannot prepare the default model: {e}") from None
    return path


def run_checked(binary: Path, args: List[str], timeout: float, ok_codes=(0,)):
    try:
        return run_binary(binary, args, timeout=timeout, ok_codes=ok_codes)
    except RunError as e:
        raise _fail(e) from None


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


def _table(rows, headers, floatfmt="g") -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=floatfmt)


def gpu_options(f):
    """--precision, --cc, --checkpoint and --timeout, shared by the commands that run a GPU."""
    f = click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
                     help="Seconds before a run is killed.")(f)
    f = click.option("--checkpoint", "-e", type=click.Path(exists=True, dir_okay=False),
                     help="llm.c checkpoint [default: random GPT-2 124M, generated on first use].")(f)
    f = click.option("--cc", type=click.IntRange(min=10), default=None,
                     help="Compute capability, e.g. 90 for H100 [default: detected].")(f)
    f = click.option("--precision", type=PRECISION, default="bf16", show_default=True,
                     help="Build precision of the executables.")(f)
    return f


# ------------------------------------------------------------------------------------------------
# The group
# ------------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpt2driver")
def cli():
    """Build, run, validate, sweep and profile the CUDA GPT-2 inference engine.

    Three variants are built per GPU and precision: naive (no KV cache), kvonly (KV cache, plain
    kernels) and optimized (KV cache plus CUDA graphs, fused and small-batch kernels). Start with
    `gpt2driver doctor`, then `gpt2driver build` and `gpt2driver compare`.
    """


@cli.command()
@click.option("--cc", type=click.IntRange(min=10), default=None,
              help="Compute capability, e.g. 90 [default: detected with nvidia-smi].")
@click.option("--precision", type=PRECISION, default="bf16", show_default=True,
              help="Precision of weights and activations.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Parallel make jobs [default: CPU count].")
def build(cc, precision, jobs):
    """Compile the executables with make (only what is out of date).

    They land in build/sm<CC>_<precision>/ ($GPT2DRIVER_BUILD_DIR replaces build/).
    """
    if cc is None:
        cc = resolve_cc(None)
        click.echo(f"detected compute capability {cc // 10}.{cc % 10} (sm{cc})")
    try:
        res = build_mod.make_build(cc, precision, jobs=jobs, quiet=False)
    except build_mod.BuildError as e:
        raise _fail(e) from None
    click.echo(f"rebuilt: {', '.join(res.rebuilt)}" if res.rebuilt else "up to date")
    click.echo(f"executables in {res.path}: {', '.join(PROGRAMS)}")


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


def sampling_args(greedy: bool, temperature, top_k, top_p) -> dict:
    """engine_args keywords for the sampling options (greedy unless a sampling option is given)."""
    sampled = any(v is not None for v in (temperature, top_k, top_p))
    if greedy and sampled:
        raise click.UsageError("--greedy cannot be combined with --temperature/--top-k/--top-p")
    if not sampled:
        return {"greedy": True}
    return {"greedy": False, "temperature": temperature, "top_k": top_k, "top_p": top_p}


@cli.command()
@click.option("--variant", type=click.Choice(VARIANTS), default="optimized", show_default=True,
              help="Which executable generates.")
@click.option("--prompt", "prompt_text", help="Prompt text (tokenised with GPT-2's BPE).")
@click.option("--prompt-ids", help="Prompt token ids, comma or space separated.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the parsed result as JSON.")
@gpu_options
def run(variant, prompt_text, prompt_ids, batch, gen, greedy, temperature, top_k, top_p, seed,
        tokenizer, as_json, precision, cc, checkpoint, timeout):
    """Generate text with one variant and print it with the speed.

    Without --prompt or --prompt-ids every row starts from the end-of-text token.
    """
    from .runner import engine_args
    from .tokenizer import TokenizerError, get_encoding

    if prompt_text is not None and prompt_ids is not None:
        raise click.UsageError("give --prompt or --prompt-ids, not both")
    sampling = sampling_args(greedy, temperature, top_k, top_p)
    ids = parse_id_list(prompt_ids) if prompt_ids is not None else None
    try:
        enc = get_encoding(tokenizer)
    except TokenizerError as e:
        if prompt_text is not None:
            raise _fail(e) from None
        enc = None
        _note(f"note: no tokenizer ({e}); printing token ids")
    if prompt_text is not None:
        ids = enc.encode(prompt_text, allowed_special="all")
        if not ids:
            raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    cc = resolve_cc(cc)
    bin_dir = ensure_built(cc, precision)
    ckpt = resolve_checkpoint(checkpoint, precision)
    args = engine_args(ckpt, batch=batch, gen=gen, seed=seed, prompt_ids=ids, quiet=True, **sampling)
    res = run_checked(bin_dir / variant, args, timeout)
    texts = {row: (enc.decode(p + g) if enc else " ".join(map(str, p + g)))
             for row, (p, g) in sorted(res.tokens.items())}
    if as_json:
        click.echo(json.dumps({**res.to_dict(), "text": {str(r): t for r, t in texts.items()}},
                              indent=2))
        return
    for row, text in texts.items():
        click.echo(f"--- row {row} ---")
        click.echo(text)
    t = res.timing
    click.echo(f"--- {variant} B={batch} gen={gen} on {res.config.get('device', '?')}: "
               f"{t.get('tokens_per_s', float('nan')):.1f} tok/s "
               f"(prefill {t.get('prefill_ms', float('nan')):.2f} ms, "
               f"{t.get('step_ms', float('nan')):.3f} ms/step)")


# ------------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size.")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=256, show_default=True,
              help="New tokens per row.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=1, show_default=True,
              help="Synthetic prompt length.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True,
              help="Comma-separated variants to compare.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed generations first.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed generations (median, min, max reported).")
@gpu_options
def compare(batch, gen, prompt_len, variants, warmup, repeat, precision, cc, checkpoint, timeout):
    """Time the variants on one configuration, with speedups.

    Runs naive, kvonly and optimized (or --variants) with the same batch, prompt and length and
    prints tokens/s (median, min, max over --repeat runs) and the speedup over naive.
    """
    from .configs import ConfigError, parse_config, expand
    from .sweep import PointRunner, format_table, summarize

    data = {"name": "compare", "precision": precision,
            "variants": [v.strip() for v in variants.split(",") if v.strip()],
            "batch": batch, "gen": gen, "prompt_len": prompt_len, "warmup": warmup,
            "repeat": repeat, "timeout_s": timeout}
    if checkpoint:
        data["checkpoint"] = checkpoint
    try:
        points = expand(parse_config(data))
    except ConfigError as e:
        raise _fail(e) from None
    runner = PointRunner(resolve_cc(cc), timeout)
    try:
        runner.prepare(points[0]["precision"], points[0]["model"], points[0]["checkpoint"])
    except Exception as e:
        raise _fail(e) from None
    rows = []
    for i, p in enumerate(points, 1):
        _note(f"[{i}/{len(points)}] {p['variant']} ...")
        rows.append(runner.run(p))
    click.echo(format_table(summarize(rows)))
    if any(r["status"] != "ok" for r in rows):
        raise _fail("some variants failed (see the table)")


# ------------------------------------------------------------------------------------------------
# validate
# ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), default=2, show_default=True, help="Batch size.")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=128, show_default=True,
              help="Steps checked.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=None,
              help="Synthetic prompt length [one EOT token].")
@click.option("--variants", default="kvonly,optimized", show_default=True,
              help="Cached variants checked against naive.")
@click.option("--max-abs", type=float, default=None, help="Max |logit difference| [by precision].")
@click.option("--max-rmse", type=float, default=None, help="Max per-step logit RMSE [by precision].")
@click.option("--min-match", type=click.FloatRange(0, 1), default=None,
              help="Min fraction of argmax agreement [by precision].")
@click.option("--worst", type=click.IntRange(min=0), default=5, show_default=True,
              help="Worst steps shown per variant.")
@gpu_options
def validate(batch, gen, prompt_len, variants, max_abs, max_rmse, min_match, worst, precision, cc,
             checkpoint, timeout):
    """Check the cached variants against naive, step by step.

    naive chooses the tokens (greedy); kvonly/optimized are fed the same tokens and their logits
    are compared with naive's at every step (max |diff|, RMSE, argmax agreement). Exits 0 on PASS, 1 on FAIL (the validate executable's code).
    """
    from .runner import engine_args

    variants = ",".join(v.strip() for v in variants.split(",") if v.strip())
    bad = [v for v in variants.split(",") if v not in ("kvonly", "optimized")]
    if bad or not variants:
        raise click.BadParameter(f"{(bad or [''])[0]!r} is not one of kvonly, optimized",
                                 param_hint="--variants")
    cc = resolve_cc(cc)
    bin_dir = ensure_built(cc, precision)
    ckpt = resolve_checkpoint(checkpoint, precision)
    args = engine_args(ckpt, batch=batch, gen=gen, prompt_len=prompt_len, quiet=True)
    args += ["--variants", variants]
    for flag, value in (("--max-abs", max_abs), ("--max-rmse", max_rmse), ("--min-match", min_match)):
        if value is not None:
            args += [flag, str(value)]
    res = run_checked(bin_dir / "validate", args, timeout, ok_codes=(0, 1))
    click.echo(format_validation(res, worst))
    ok = res.done == 0 and all(s.get("result") == "PASS" for s in res.vsummary)
    click.echo("PASS" if ok else "FAIL")
    click.get_current_context().exit(res.done or (0 if ok else 1))


def format_validation(res, worst: int = 5) -> str:
    """The per-variant summary, then each variant's worst steps by max |diff|."""
    from .protocol import vsteps_frame

    keys = ["variant", "steps", "rows", "max_abs", "rmse", "match_frac", "tol_max_abs", "tol_rmse",
            "tol_match", "result"]
    parts = [_table([[s.get(k) for k in keys] for s in res.vsummary], keys)]
    df = vsteps_frame(res)
    if worst and not df.empty and "max_abs" in df:
        cols = [c for c in ("variant", "step", "pos", "row", "max_abs", "rmse", "ref_tok", "test_tok",
                            "match") if c in df]
        for variant, grp in df.groupby("variant", sort=False):
            top = grp.sort_values("max_abs", ascending=False).head(worst)
            parts.append(f"\nworst steps of {variant}:")
            parts.append(_table(top[cols].values.tolist(), cols))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# sweep
# ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Sweep config YAML [default: configs/gpt2_optim.yaml].")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory [default: results/<config name>/ in the repository].")
@click.option("--cc", type=click.IntRange(min=10), default=None, help="Compute capability [detected].")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel make jobs.")
@click.option("--dry-run", is_flag=True, help="List the points (and which are done); run nothing.")
@click.option("--gpus", default=None, metavar="all|0,1,...",
              help="Run on these GPUs (nvidia-smi -L indices), one worker per GPU, each point on "
                   "one GPU at a time [default: one point after the other on the default GPU].")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="slurm: submit the unfinished points as a Slurm job array (sbatch) and gather "
                   "the results.")
@click.option("--partition", default=None, help="[slurm] Partition (sbatch --partition).")
@click.option("--gres", default="gpu:1", show_default=True,
              help="[slurm] Generic resources per task; 'none' for no --gres.")
@click.option("--time", "time_limit", default=None, metavar="HH:MM:SS",
              help="[slurm] Time limit per array task (sbatch --time).")
@click.option("--slurm-opt", multiple=True, metavar="KEY=VAL",
              help="[slurm] Any other sbatch option, as --KEY=VAL (repeatable), e.g. account=abc.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None,
              help="[slurm] At most this many array tasks [default: one per group of variants].")
@click.option("--max-running", type=click.IntRange(min=1), default=None,
              help="[slurm] At most this many tasks at once (--array=...%N).")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=10, show_default=True,
              help="[slurm] Seconds between squeue polls.")
def sweep(config_path, out, cc, jobs, dry_run, gpus, executor, partition, gres, time_limit,
          slurm_opt, max_tasks, max_running, poll_s):
    """Run every point of a sweep config; resumable.

    Results go to results.jsonl (append-only), results.csv and results.json; a rerun skips the
    points already done. Ctrl-C stops cleanly (exit 130) keeping finished points.

    --gpus all (or 0,1,...) runs one worker per GPU; builds and models are prepared first, and
    each row records the GPU's name and index.

    --executor slurm writes one shard per array task and a batch script under
    <out>/slurm/<submission>/, submits them with sbatch, polls squeue, and gathers the results
    into the same files; tasks that failed are shown with the tail of their log. The executables
    are built and the default model made on this host before submission, so the results
    directory, the build directory, the models and this Python environment must be on a
    filesystem shared with the compute nodes (--cc is needed when this host has no GPU; with
    mixed GPU types give the oldest compute capability). Ctrl-C cancels the job.
    """
    from .configs import ConfigError, default_config, load_config
    from .sweep import SweepError, SweepInterrupted, run_sweep

    ctx = click.get_current_context()
    slurm_only = {"partition": "--partition", "gres": "--gres", "time_limit": "--time",
                  "slurm_opt": "--slurm-opt", "max_tasks": "--max-tasks",
                  "max_running": "--max-running", "poll_s": "--poll"}
    given = [flag for name, flag in slurm_only.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if executor != "slurm" and given:
        raise click.UsageError(f"{given[0]} needs --executor slurm")
    if executor == "slurm" and gpus is not None:
        raise click.UsageError("--gpus is for the local executor; Slurm tasks get a GPU through --gres")
    try:
        cfg = load_config(config_path) if config_path else default_config()
    except ConfigError as e:
        raise _fail(e) from None
    if cfg.profile is not None:
        raise _fail(f"{cfg.source} is a profiling config: use gpt2driver profile --config {cfg.source}")
    out_dir = Path(out) if out else repo_root() / "results" / cfg.name
    kw = {}
    try:
        if gpus is not None:
            from .scaleout import parse_gpus

            kw["gpus"] = parse_gpus(gpus)
        if executor == "slurm":
            from .scaleout import SlurmOptions

            kw["executor"] = "slurm"
            kw["slurm"] = SlurmOptions(partition=partition, gres=gres, time=time_limit,
                                       extra=tuple(slurm_opt), max_tasks=max_tasks,
                                       max_running=max_running, poll_s=poll_s)
        run_sweep(cfg, out_dir, cc=cc, dry_run=dry_run, jobs=jobs, **kw)
    except SweepInterrupted as e:
        _note(str(e))
        sys.exit(130)
    except (SweepError, ConfigError) as e:
        raise _fail(e) from None


# ------------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------------


def _bench_variants(ctx, param, value):
    from .bench import parse_variants

    try:
        return parse_variants(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.option("-b", "--batch", type=click.IntRange(min=1), multiple=True,
              help="Batch size; repeat for several [1, 4, 16].")
@click.option("-n", "--gen", type=click.IntRange(min=1), default=512, show_default=True,
              help="New tokens per row (after one start token).")
@click.option("--variants", default=",".join(VARIANTS), show_default=True,
              callback=_bench_variants, help="Comma-separated executables to time.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed generations of each executable first.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed generations of everything (median, min, max reported).")
@click.option("--no-hf", "no_hf", is_flag=True,
              help="Leave out Hugging Face's GPT2LMHeadModel.generate.")
@click.option("--hf-compile/--no-hf-compile", default=True, show_default=True,
              help="Also time generate with a static cache and torch.compile.")
@click.option("--hf-warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed compiled generate calls first (the first compiles); "
                   "hf-eager gets min(this, 1).")
@click.option("--copy-gbps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Copy bandwidth (GB/s) for the % of floor instead of measuring it with torch.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory [default: results/bench/<timestamp>/ in the repository].")
@gpu_options
def bench(batch, gen, variants, warmup, repeat, no_hf, hf_compile, hf_warmup, copy_gbps, out,
          precision, cc, checkpoint, timeout):
    """Our executables against Hugging Face's GPT-2 on the same weights, and the decode floor.

    In one run on one GPU: naive, kvonly and optimized through the built executables (as a
    sweep runs them), then, where torch and transformers import and CUDA is available,
    GPT2LMHeadModel.generate built from the same checkpoint in the same precision: hf-eager
    (default dynamic cache) and hf-compiled (static cache + torch.compile of forward,
    mode reduce-overhead, fullgraph). All greedy, one start token (EOT), exactly --gen new
    tokens, batch B. Rows that cannot run say why (skipped / failed).

    The device-to-device copy bandwidth is measured with torch (1 GiB copy, bytes read +
    written, median of 20); each row's step time is compared with the decode floor: (weights
    + KV cache read at the mean position) / copy bandwidth. Prints a table and writes
    results.csv, results.json and table.txt to the results directory; exits 1 if a row failed.
    """
    from .bench import BenchOptions, run_bench
    from .configs import ConfigError
    from .checkpoint import CheckpointError

    opts = BenchOptions(batches=tuple(batch) or (1, 4, 16), gen=gen, precision=precision,
                        variants=variants, checkpoint=checkpoint, cc=cc, warmup=warmup,
                        repeat=repeat, hf=not no_hf, hf_compile=hf_compile, hf_warmup=hf_warmup,
                        copy_gbps=copy_gbps, timeout=timeout, out=out)
    try:
        res = run_bench(opts, log=_note)
    except (ConfigError, CheckpointError, OSError) as e:
        raise _fail(e) from None
    click.echo(res.table)
    click.echo(f"results: {res.paths['csv']} {res.paths['json']}")
    if res.failed:
        raise _fail(f"failed: {', '.join(res.failed)} (see the table)")


# ------------------------------------------------------------------------------------------------
# profile
# ------------------------------------------------------------------------------------------------


NCU_ONLY = ("by", "metrics", "sections", "clock_control", "kernel_regex", "launch_count")


@cli.command()
@click.option("--tool", type=click.Choice(["builtin", "nsys", "ncu"]), default="builtin",
              show_default=True,
              help="builtin: CUDA-event stage timer; nsys: Nsight Systems kernel times; "
                   "ncu: Nsight Compute kernel metrics (DRAM bytes, throughput, occupancy).")
@click.option("--variant", type=click.Choice(["kvonly", "optimized"]), default="optimized",
              show_default=True, help="Variant profiled.")
@click.option("-b", "--batch", type=click.IntRange(min=1), multiple=True,
              help="Batch size; repeat for several [1].")
@click.option("--steps", type=click.IntRange(min=1), default=16, show_default=True,
              help="Measured decode steps (nsys captures the first one).")
@click.option("--warmup", type=click.IntRange(min=0), default=8, show_default=True,
              help="Warm-up decode steps.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=None,
              help="Synthetic prompt length [one EOT token].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Profiling config (e.g. configs/profile.yaml); options given explicitly win.")
@click.option("--out", "out_base", type=click.Path(file_okay=False),
              help="Where the results folders <tool>-<variant>-b<B>-<timestamp>/ go "
                   "[default: results/profile/ in the repository].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the table(s) as JSON records to this file ('-': stdout).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the table(s) as CSV to this file ('-': stdout).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rows shown in the printed table (0 = all).")
@click.option("--copy-gbps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Copy bandwidth (GB/s) that achieved bandwidth is compared with [3000: the H100 "
                   "copy bandwidth measured on our device, docs/perf-notes.md]; give your GPU's.")
@click.option("--by", type=click.Choice(["kernel", "stage"]), default="kernel", show_default=True,
              help="ncu: one row per kernel, or per NVTX stage (qkv, attn, fc, ...).")
@click.option("--metrics", help="ncu: comma-separated metrics [time, DRAM bytes and throughput, "
                                "occupancy, SM throughput].")
@click.option("--sections", help="ncu: comma-separated --section sets (e.g. SpeedOfLight,Occupancy).")
@click.option("--clock-control", type=click.Choice(["none", "base"]), default="none",
              show_default=True, help="ncu: none = the GPU's own clocks, base = locked base clocks.")
@click.option("--kernel-regex", help="ncu: profile only kernels whose name matches this regex.")
@click.option("--launch-count", type=click.IntRange(min=1), default=None,
              help="ncu: profile at most this many kernel launches.")
@click.option("--phase", type=click.Choice(["decode", "prefill"]), default="decode", show_default=True,
              help="decode: the measured decode steps; prefill: the prompt's prefill (what the time "
                   "to first token is made of; give --prompt-len; nsys and ncu only).")
@gpu_options
def profile(tool, variant, batch, steps, warmup, prompt_len, config_path, out_base, json_path,
            csv_path, top, copy_gbps, by, metrics, sections, clock_control, kernel_regex,
            launch_count, phase, precision, cc, checkpoint, timeout):
    """Profile decode steps (or the prefill) of the profile executable: which kernels cost what.

    Runs build/sm<CC>_<prec>/profile under the tool and prints, per kernel (nsys, ncu) or stage
    (builtin): calls per step, time per step, mean time per call and share of the step; with ncu
    also achieved DRAM GB/s against --copy-gbps, DRAM % of peak, occupancy and SM throughput.
    Only the measured steps are profiled (NVTX range MEASURE in domain decode), or with --phase
    prefill the prompt's prefill (range PREFILL). Report files and the parsed tables (table.csv,
    table.json, summary.txt) are kept in a results folder per batch size.
    """
    from . import profiling
    from .configs import ConfigError, load_config

    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT

    copy_gbps = copy_gbps or profiling.DEFAULT_COPY_GBPS
    metric_list = profiling.split_list(metrics)
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            raise _fail(e) from None
        prof = cfg.profile or {}
        tool = tool if given("tool") else prof.get("tool", tool)
        steps = steps if given("steps") else prof.get("steps", steps)
        warmup = warmup if given("warmup") else prof.get("warmup", warmup)
        variant = variant if given("variant") else cfg.variants[0]
        batch = batch if given("batch") else tuple(cfg.batch)
        precision = precision if given("precision") else cfg.precisions[0]
        prompt_len = prompt_len if given("prompt_len") else cfg.prompt_len[0]
        timeout = timeout if given("timeout") else cfg.timeout_s
        cc = cc if cc is not None else cfg.cc
        metric_list = metric_list or list(prof.get("metrics", ()))
        if variant not in ("kvonly", "optimized"):
            raise _fail(f"{config_path}: variants: profile takes kvonly or optimized, not {variant}")
    if tool != "ncu":
        wrong = [n for n in NCU_ONLY if given(n)]
        if wrong:
            raise click.UsageError(f"--{wrong[0].replace('_', '-')} applies to --tool ncu only")
    if phase == "prefill":
        if tool == "builtin":
            raise click.UsageError("--phase prefill needs --tool ncu or nsys (the builtin timer times "
                                   "decode steps only)")
        # the decode steps after the prefill are not profiled: run as few as the executable takes
        steps = steps if given("steps") else 1
        warmup = warmup if given("warmup") else 0
    batches = batch or (1,)
    quiet_stdout = "-" in (json_path, csv_path)
    say = _note if quiet_stdout else click.echo
    base = Path(out_base) if out_base else repo_root() / "results" / "profile"
    ncu_opts = profiling.NcuOptions(metric_list, profiling.split_list(sections), clock_control,
                                    kernel_regex, launch_count, by)
    done = []
    try:
        exe = profiling.require_tool(tool) if tool != "builtin" else None
        cc = resolve_cc(cc)
        bin_dir = ensure_built(cc, precision)
        ckpt = resolve_checkpoint(checkpoint, precision)
        for b in batches:
            args = profiling.profile_args(ckpt, variant, b, steps, warmup, prompt_len,
                                          builtin=tool == "builtin")
            out_dir = profiling.results_dir(base, tool, variant, b, phase=phase)
            binary = bin_dir / "profile"
            if tool == "builtin":
                rep = profiling.run_builtin(binary, args, out_dir, timeout)
            elif tool == "nsys":
                rep = profiling.run_nsys(binary, args, out_dir, timeout, exe=exe, phase=phase)
            else:
                rep = profiling.run_ncu(binary, args, out_dir, timeout, ncu_opts, exe=exe,
                                        steps=steps, phase=phase)
            text = "\n".join([_profile_headline(rep, variant, b),
                              profiling.summarize(rep, copy_gbps, top)])
            profiling.save_report(rep, text)
            say(text)
            say(f"files: {out_dir}")
            done.append(({"tool": tool, "variant": variant, "batch": b, "phase": phase}, rep))
        frame = profiling.combined_frame(done, copy_gbps)
        if json_path:
            _write_out(json_path, frame.to_json(orient="records", indent=2) + "\n")
        if csv_path:
            _write_out(csv_path, frame.to_csv(index=False))
    except (profiling.ProfilingError, RunError, OSError) as e:
        raise _fail(str(e).replace("\n", " ")) from None


def _profile_headline(rep, variant: str, batch: int) -> str:
    res = rep.result
    where = f"{variant} B={batch} on {res.config.get('device', '?')}"
    if rep.phase == "prefill":
        where += f", prefill of {res.config.get('prompt_len', '?')} tokens"
    p = res.profile
    if rep.tool == "builtin" and isinstance(p.get("step_ms"), (int, float)):
        tps = p.get("tokens_per_s", float("nan"))
        return (f"{where}: {p['step_ms']:.4g} ms/step, {tps:.1f} tok/s over "
                f"{p.get('steps', rep.steps)} steps")
    return f"{where} ({rep.tool})"


def _write_out(path: str, text: str) -> None:
    if path == "-":
        click.echo(text, nl=False)
    else:
        Path(path).write_text(text)


# ------------------------------------------------------------------------------------------------
# checkpoint / tokenizer
# ------------------------------------------------------------------------------------------------


@cli.group()
def checkpoint():
    """Create, convert and inspect llm.c checkpoint files."""


def _print_info(path) -> dict:
    from .checkpoint import checkpoint_info

    info = checkpoint_info(path)
    for k, v in info.items():
        if k != "error" and v is not None:
            click.echo(f"{k:18} {v}")
    return info


@checkpoint.command("random")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--model", type=click.Choice(list(PRESETS)),
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
    from .checkpoint import CheckpointError, ModelConfig, make_random_checkpoint

    custom = [layers, heads, channels]
    if model and any(v is not None for v in custom):
        raise click.UsageError("give --model or --layers/--heads/--channels, not both")
    if any(v is not None for v in custom) and not all(v is not None for v in custom):
        raise click.UsageError("a custom shape needs all of --layers, --heads and --channels")
    try:
        cfg = (ModelConfig.custom(layers, heads, channels, max_seq_len=max_seq_len)
               if layers is not None else ModelConfig.preset(model or "gpt2"))
        make_random_checkpoint(out, cfg, dtype=dtype, seed=seed)
    except (CheckpointError, OSError) as e:
        raise _fail(e) from None
    _print_info(out)


@checkpoint.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Stored tensor type.")
def checkpoint_convert(src, out, dtype):
    """Convert Hugging Face GPT-2 weights (a directory with model.safetensors) to OUT."""
    from .checkpoint import CheckpointError, convert_hf

    try:
        convert_hf(src, out, dtype=dtype)
    except (CheckpointError, OSError) as e:
        raise _fail(e) from None
    _print_info(out)


@checkpoint.command("info")
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def checkpoint_info_cmd(file, as_json):
    """Show a checkpoint's header and check its size; exits 1 if it is not valid."""
    from .checkpoint import checkpoint_info

    if as_json:
        info = checkpoint_info(file)
        click.echo(json.dumps(info, indent=2))
    else:
        info = _print_info(file)
    if not info.get("ok"):
        raise _fail(info.get("error") or f"{file}: not a valid checkpoint")


@cli.group()
def tokenizer():
    """llm.c tokenizer files."""


@tokenizer.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
def tokenizer_export(out):
    """Write GPT-2's tokenizer (from tiktoken) as an llm.c tokenizer file OUT."""
    from .tokenizer import TokenizerError, export_tiktoken

    try:
        path = export_tiktoken(out)
    except (TokenizerError, OSError) as e:
        raise _fail(e) from None
    click.echo(f"wrote {path}")


# ------------------------------------------------------------------------------------------------
# doctor
# ------------------------------------------------------------------------------------------------


def _output_line(cmd: List[str], containing: str = "") -> Optional[str]:
    """The first line of a command's output that contains ``containing``; None if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [l.strip() for l in proc.stdout.splitlines() if containing in l and l.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def doctor_report() -> List[tuple]:
    """(check, status) pairs describing the toolchain, GPU and builds."""
    rows = []
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = shutil.which("nvcc") or (str(cuda_home / "bin/nvcc") if (cuda_home / "bin/nvcc").exists() else None)
    rows.append(("nvcc", f"{nvcc}: {_output_line([nvcc, '--version'], 'release')}" if nvcc
                 else "not found (install the CUDA toolkit or set CUDA_HOME)"))
    gpu = shutil.which("nvidia-smi") and _output_line(
        ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"])
    rows.append(("GPU", gpu or "none found (nvidia-smi missing or failing)"))
    cc, reason = build_mod.detect_cc()
    rows.append(("compute capability", f"{cc} (use --cc {cc})" if cc else reason))
    wheel = build_mod.find_cublas()
    libs = sorted((cuda_home / "lib64").glob("libcublas.so*")) if (cuda_home / "lib64").is_dir() else []
    if os.environ.get("CUBLAS_HOME"):
        cublas = f"CUBLAS_HOME={os.environ['CUBLAS_HOME']}"
    elif wheel:
        cublas = f"nvidia-cublas wheel: {wheel}"
    elif libs:
        cublas = f"{libs[0]}"
    else:
        cublas = "not found (set CUBLAS_HOME, install CUDA, or pip install nvidia-cublas)"
    rows.append(("cuBLAS", cublas))
    for tool in ("nsys", "ncu"):
        rows.append((tool, shutil.which(tool) or "not on PATH"))
    for mod, why in (("matplotlib", "sweep plots"), ("safetensors", "checkpoint convert")):
        try:
            __import__(mod)
            rows.append((mod, "installed"))
        except ImportError:
            rows.append((mod, f"not installed (optional: {why})"))
    root = build_root()
    dirs = sorted(d for d in root.glob("sm*_*") if d.is_dir()) if root.is_dir() else []
    for d in dirs:
        built = [p for p in PROGRAMS if (d / p).is_file() and os.access(d / p, os.X_OK)]
        rows.append((f"build {d.name}", ", ".join(built) or "nothing built"))
    if not dirs:
        rows.append(("builds", f"none under {root} (run gpt2driver build)"))
    return rows


@cli.command()
def doctor():
    """Check the toolchain, GPU, cuBLAS, profilers and what is built."""
    for name, status in doctor_report():
        click.echo(f"{name:20} {status}")


def main(argv: Optional[Sequence[str]] = None):
    """Entry point of the gpt2driver script."""
    return cli.main(args=list(argv) if argv is not None else None, prog_name="gpt2driver")


if __name__ == "__main__":
    main()
