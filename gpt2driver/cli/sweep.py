"""gpt2driver sweep"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BadInput, ConfigError
from ..experiments.configs import default_config, load_config
from ..experiments.executors.local import gpu_spec, parse_gpus
from ..experiments.executors.slurm_cmd import SlurmOptions
from ..experiments.summary import check_failed
from ..experiments.sweep import run_sweep
from ..paths import results_root
from .options import bin_dir_option, cc_option, given, output_format, quiet_option

SLURM_ONLY = {"partition": "--partition", "gres": "--gres", "time_limit": "--time",
              "slurm_opt": "--slurm-opt", "max_tasks": "--max-tasks",
              "max_running": "--max-running", "poll_s": "--poll"}


def gpus_callback(ctx, param, value):
    """--gpus: its syntax checked at once (a usage error); the GPUs are listed when it runs."""
    if value is not None:
        try:
            gpu_spec(value)
        except BadInput as e:
            raise click.BadParameter(str(e)) from None
    return value


def check_executor(ctx: click.Context, executor: str, gpus) -> None:
    wrong = [SLURM_ONLY[n] for n in given(ctx, *SLURM_ONLY)]
    if executor != "slurm" and wrong:
        raise click.UsageError(f"{wrong[0]} needs --executor slurm")
    if executor == "slurm" and gpus is not None:
        raise click.UsageError("--gpus is for the local executor; Slurm tasks get a GPU through --gres")


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Sweep config YAML [default: configs/gpt2_optim.yaml].")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory [default: results/<config name>/ in the repository].")
@cc_option
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel make jobs.")
@click.option("--dry-run", is_flag=True, help="List the points (and which are done); run nothing.")
@click.option("--gpus", default=None, metavar="all|0,1,...", callback=gpus_callback,
              help="Run on these GPUs: 'all', or indices as nvidia-smi -L numbers them, "
                   "comma-separated (0,1); one worker per GPU, each point on one GPU at a time "
                   "[default: one point after the other on the default GPU].")
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
@output_format
@bin_dir_option
@quiet_option
def sweep(config_path, out, cc, jobs, dry_run, gpus, executor, partition, gres, time_limit,
          slurm_opt, max_tasks, max_running, poll_s, fmt, bin_dir):
    """Run every point of a sweep config; resumable. Exits 1 when a point failed (after running
    the others), saying how many.

    Results go to results.jsonl (append-only), results.csv and results.json; a rerun skips the
    points already done. Ctrl-C stops cleanly (exit 130) keeping finished points. A config with
    an ablate axis (configs/ablations.yaml) also prints each switch off as a ratio to all on.

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
    check_executor(click.get_current_context(), executor, gpus)
    cfg = load_config(config_path) if config_path else default_config()
    if cfg.profile is not None:
        raise ConfigError(f"{cfg.source} is a profiling config: use gpt2driver profile --config "
                          f"{cfg.source}")
    slurm = SlurmOptions(partition=partition, gres=gres, time=time_limit, extra=tuple(slurm_opt),
                         max_tasks=max_tasks, max_running=max_running, poll_s=poll_s)
    df = run_sweep(cfg, Path(out) if out else results_root() / cfg.name, cc=cc, dry_run=dry_run,
              jobs=jobs, gpus=parse_gpus(gpus) if gpus is not None else None,
              executor=executor, slurm=slurm, bin_dir=bin_dir, fmt=fmt)
    if not dry_run:
        check_failed(df, "point")
