"""A profiling session (``gpt2driver profile``): the options (from the command line, a profiling
config filling what was not given), then for each batch size one run of the profile executable
under the tool, its report saved in a results folder and its summary printed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .. import names
from ..engine import build as build_mod
from ..engine import preflight
from ..errors import BenchError, ConfigError
from ..experiments import floor
from ..files import models
from ..paths import results_root
from . import builtin, ncu, nsys, trace
from .common import ProfileReport, profile_args, require_tool, results_dir, save_report
from .tables import combined_frame, summarize

NCU_ONLY = ("by", "metrics", "sections", "clock_control", "kernel_regex", "launch_count")


@dataclass
class ProfileOptions:
    tool: str = "builtin"
    variant: str = "optimized"
    batches: Sequence[int] = (1,)
    steps: int = 16
    warmup: int = 8
    prompt_len: Optional[int] = None
    out_base: Optional[str] = None
    top: int = 10
    copy_gbps: Optional[float] = None  # None: measured (with_copy_bandwidth), or unknown
    by: str = "kernel"
    metrics: List[str] = field(default_factory=list)
    sections: List[str] = field(default_factory=list)
    clock_control: str = "none"
    kernel_regex: Optional[str] = None
    launch_count: Optional[int] = None
    phase: str = "decode"
    precision: str = "bf16"
    cc: Optional[int] = None
    checkpoint: Optional[str] = None
    timeout: float = 600.0
    ablate: str = names.ALL_ON
    copy_note: str = ""  # where copy_gbps comes from, said with the first summary


def with_config(o: ProfileOptions, config_path: str, given: Set[str]) -> ProfileOptions:
    """The options with a profiling config's values where the command line gave none."""
    from ..experiments.configs import load_config

    cfg = load_config(config_path)
    prof = cfg.profile or {}
    pick = {"tool": prof.get("tool"), "steps": prof.get("steps"), "warmup": prof.get("warmup"),
            "variant": cfg.variants[0], "batches": tuple(cfg.batch),
            "precision": cfg.precisions[0], "prompt_len": cfg.prompt_len[0],
            "timeout": cfg.timeout_s, "ablate": cfg.ablate[0]}
    given = {"batches" if g == "batch" else g for g in given}
    new = {k: v for k, v in pick.items() if v is not None and k not in given}
    new["cc"] = o.cc if o.cc is not None else cfg.cc
    new["metrics"] = o.metrics or list(prof.get("metrics", ()))
    o = replace(o, **new)
    if o.variant not in names.CACHED_VARIANTS:
        raise ConfigError(f"{config_path}: variants: profile takes kvonly or optimized, not {o.variant}")
    return o


def option_problem(o: ProfileOptions, given: Set[str]) -> Optional[str]:
    """What is wrong with this combination of options (a usage error), or None."""
    if o.tool != "ncu":
        wrong = [n for n in NCU_ONLY if n in given]
        if wrong:
            return f"--{wrong[0].replace('_', '-')} applies to --tool ncu only"
    if o.phase == "prefill" and o.tool in ("builtin", "trace"):
        return (f"--phase prefill needs --tool ncu or nsys (--tool {o.tool} covers decode steps "
                "only)")
    return None


def for_phase(o: ProfileOptions, given: Set[str]) -> ProfileOptions:
    """The prefill: the decode steps after it are not profiled, so as few as the executable
    takes unless given."""
    if o.phase != "prefill":
        return o
    return replace(o, steps=o.steps if "steps" in given else 1,
                   warmup=o.warmup if "warmup" in given else 0)


def with_copy_bandwidth(o: ProfileOptions) -> ProfileOptions:
    """The copy bandwidth the achieved bandwidth is put against: --copy-gbps as given, else
    measured on this GPU as bench measures it (torch, a 1 GiB device copy); None when it cannot
    be measured (no % of the copy bandwidth then). ``copy_note`` says which."""
    if o.copy_gbps:
        return replace(o, copy_note=f"copy bandwidth: {o.copy_gbps:.0f} GB/s (given with "
                                    f"--copy-gbps)")
    try:
        bw = floor.measure_copy_bandwidth()
    except BenchError as e:
        return replace(o, copy_note=f"copy bandwidth: not measured ({e}): no % of the copy "
                                    f"bandwidth; give --copy-gbps")
    return replace(o, copy_gbps=bw["gbps"], copy_note=f"copy bandwidth: {bw['gbps']:.0f} GB/s on "
                                                      f"{bw['device']} ({floor.copy_source(bw)})")


def headline(rep: ProfileReport, variant: str, batch: int) -> str:
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


def profile_one(o: ProfileOptions, binary: Path, ckpt: Path, batch: int, exe: Optional[str],
                base: Path) -> ProfileReport:
    args = profile_args(ckpt, o.variant, batch, o.steps, o.warmup, o.prompt_len,
                        builtin=o.tool == "builtin", ablate=o.ablate)
    out_dir = results_dir(base, o.tool, o.variant, batch, phase=o.phase)
    if o.tool == "builtin":
        return builtin.run_builtin(binary, args, out_dir, o.timeout)
    if o.tool == "trace":
        return trace.run_trace(binary, args + list(trace.TRACE_FLAGS), out_dir, o.timeout)
    if o.tool == "nsys":
        return nsys.run_nsys(binary, args, out_dir, o.timeout, exe=exe, phase=o.phase)
    opts = ncu.NcuOptions(o.metrics, o.sections, o.clock_control, o.kernel_regex,
                          o.launch_count, o.by)
    return ncu.run_ncu(binary, args, out_dir, o.timeout, opts, exe=exe, steps=o.steps,
                       phase=o.phase)


def run_profile(o: ProfileOptions, say) -> List[Tuple[Dict[str, object], ProfileReport]]:
    """Profile each batch size; each summary goes to ``say`` as it is made. The tagged reports."""
    exe = require_tool(o.tool) if o.tool in ("nsys", "ncu") else None
    ckpt = models.checkpoint_or_default(o.checkpoint, o.precision)
    positions = preflight.profile_positions(o.warmup, o.steps, trace=o.tool == "trace")
    preflight.check_model(ckpt, preflight.Request(max(o.batches), positions,
                                                  prompt_len=o.prompt_len))
    cc = build_mod.resolve_cc(o.cc)
    bin_dir = build_mod.make_build(cc, o.precision, quiet=True).path
    base = Path(o.out_base) if o.out_base else results_root() / "profile"
    done = []
    for b in o.batches:
        rep = profile_one(o, bin_dir / "profile", ckpt, b, exe, base)
        body = (trace.summarize(rep.timeline, o.top, rep.notes) if o.tool == "trace"
                else summarize(rep, o.copy_gbps, o.top))
        text = "\n".join([headline(rep, o.variant, b), body])
        save_report(rep, text)
        if o.copy_note and not done:
            say(o.copy_note)
        say(text)
        say(f"files: {rep.out_dir}")
        done.append(({"tool": o.tool, "variant": o.variant, "batch": b, "phase": o.phase}, rep))
    return done


def table(done, copy_gbps: Optional[float]):
    """Every report's table in one DataFrame, each row tagged (for --csv / --json)."""
    return combined_frame(done, copy_gbps)
