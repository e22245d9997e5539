"""gpt2driver profile"""

from __future__ import annotations

import click

from ..names import ABLATIONS, PROFILE_TOOLS
from ..profilers import session
from ..profilers.common import split_list
from ..tables.printers import render, write_out
from .options import ablation, given, gpu_options, note, output_format


@click.command()
@click.option("--tool", type=click.Choice(PROFILE_TOOLS), default="builtin",
              show_default=True,
              help="builtin: CUDA-event stage timer; nsys: Nsight Systems kernel times; "
                   "ncu: Nsight Compute kernel metrics (DRAM bytes, throughput, occupancy); "
                   "trace: the kernels of each step on a timeline through CUPTI (no Nsight Systems "
                   "needed): Chrome trace JSON, a PNG, a table per step.")
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
@output_format
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the table(s) as JSON records to this file ('-': stdout, as -o json).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also write the table(s) as CSV to this file ('-': stdout, as -o csv).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rows shown in the printed table (0 = all).")
@click.option("--copy-gbps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Copy bandwidth (GB/s, bytes read + written) that achieved bandwidth is "
                   "compared with [measured on this GPU with torch, as bench does; without torch "
                   "and CUDA no % of it].")
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
@click.option("--ablate", default="none", show_default=True, metavar="NAME[+NAME]",
              help=f"Switches off in the optimized runner profiled ({', '.join(ABLATIONS)}).")
@gpu_options
def profile(tool, variant, batch, steps, warmup, prompt_len, config_path, out_base, fmt,
            json_path, csv_path, top, copy_gbps, by, metrics, sections, clock_control, kernel_regex,
            launch_count, phase, ablate, precision, cc, checkpoint, timeout):
    """Profile decode steps (or the prefill) of the profile executable: which kernels cost what.

    Runs build/sm<CC>_<prec>/profile under the tool and prints, per kernel (nsys, ncu) or stage
    (builtin): calls per step, time per step, mean time per call and share of the step; with ncu
    also achieved DRAM GB/s against --copy-gbps, DRAM % of peak, occupancy and SM throughput.
    Only the measured steps are profiled (NVTX range MEASURE in domain decode), or with --phase
    prefill the prompt's prefill (range PREFILL). Report files and the parsed tables (table.csv,
    table.json, summary.txt) are kept in a results folder per batch size. With -o csv|json|jsonl
    the table(s) go to stdout in that format and the summaries to stderr.
    """
    ctx = click.get_current_context()
    opts = session.ProfileOptions(
        tool, variant, batch or (1,), steps, warmup, prompt_len, out_base, top,
        copy_gbps, by, split_list(metrics), split_list(sections),
        clock_control, kernel_regex, launch_count, phase, precision, cc, checkpoint, timeout,
        ablation(ablate))
    if config_path:
        opts = session.with_config(opts, config_path, given(ctx))
    problem = session.option_problem(opts, given(ctx))
    if problem:
        raise click.UsageError(problem)
    opts = session.for_phase(opts, given(ctx))
    say = note if "-" in (json_path, csv_path) or fmt != "markdown" else click.echo
    opts = session.with_copy_bandwidth(opts)
    frame = session.table(session.run_profile(opts, say), opts.copy_gbps)
    outputs = [("-", fmt)] if fmt != "markdown" else []
    for path, kind in outputs + [(json_path, "json"), (csv_path, "csv")]:
        if path:
            write_out(path, render(frame, kind), lambda text: click.echo(text, nl=False))
