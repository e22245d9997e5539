"""gpt2_optim as a peer in the bench: a user's own checkouts of gpt2_optim and llm.c, built with
gpt2_optim's Makefile (``make all GPU_COMPUTE_CAPABILITY=<cc> PRECISION=BF16 LLM_C_ROOT=<llm.c>``),
its ``bin/inference_gpt2optimcu`` run once per batch size and repetition, and its naive and KV-cache
speeds read from the two ``Token per second: N`` lines it prints (after ``Base implementation:
total time = T ms`` and ``KV Cache implementation: total time = T ms``). Those rows are timed by
gpt2_optim's own program, not by us: ``timed_by`` says so in every row and table.

No code of either project is part of this repository: the driver only runs their Makefile and
their program and reads what the program prints.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ... import names
from ...engine.build import make_cause, run_make
from ...engine.runner import run_captured, tail
from ...errors import BuildError, ExperimentError
from .rows import base_row, failed_row

PROGRAM = Path("bin") / "inference_gpt2optimcu"
PRECISION = "BF16"
IMPLEMENTATIONS = {"Base": names.GPT2OPTIM_NAIVE, "KV Cache": names.GPT2OPTIM_KVCACHE}
_IMPL = re.compile(r"^\s*(.+?) implementation: total time = ([0-9.]+) ms")
_TPS = re.compile(r"^\s*Token per second: ([0-9.]+)")

Log = Callable[[str], None]
RowHook = Callable[[Dict[str, Any]], None]


@dataclass
class Trees:
    """The user's gpt2_optim and llm.c checkouts."""

    gpt2optim: Path
    llmc: Path

    @property
    def program(self) -> Path:
        return self.gpt2optim / PROGRAM


def find_trees(gpt2optim: str, llmc: Optional[str] = None) -> Trees:
    """The two checkouts, checked: gpt2_optim has a Makefile, llm.c has llmc/ (default: llm.c
    next to gpt2_optim, as gpt2_optim's Makefile assumes)."""
    root = Path(gpt2optim).expanduser().resolve()
    if not (root / "Makefile").is_file():
        raise ExperimentError(f"--gpt2-optim {gpt2optim}: no Makefile there (expected a checkout "
                              f"of gpt2_optim)")
    lib = Path(llmc).expanduser().resolve() if llmc else root.parent / "llm.c"
    if not (lib / "llmc").is_dir():
        raise ExperimentError(f"{'--llmc ' + str(llmc) if llmc else str(lib)}: no llmc/ directory "
                              f"there (expected a checkout of karpathy/llm.c; give it with --llmc)")
    return Trees(root, lib)


def make_command(trees: Trees, cc: int) -> List[str]:
    return ["make", "all", f"GPU_COMPUTE_CAPABILITY={int(cc)}", f"PRECISION={PRECISION}",
            f"LLM_C_ROOT={trees.llmc}"]


def build_hint(output: str) -> str:
    """What a failed build's output says about its cause, when it is a known one."""
    if "cudaMemLocation" in output or re.search(r"cudaMemAdvise.*(error|incompatible)|"
                                                r"(error|incompatible).*cudaMemAdvise", output):
        return ("llm.c's cudaMemAdvise call passes a device id, but CUDA 13 takes a cudaMemLocation "
                "there (cudaMemAdvise's signature changed in CUDA 13): build with a CUDA 12 "
                "toolkit, or use an llm.c checkout that passes a cudaMemLocation")
    return ""


def build(trees: Trees, cc: int, log: Log) -> Path:
    """Run gpt2_optim's Makefile; its program. BuildError with the cause on failure."""
    cmd = make_command(trees, cc)
    if shutil.which("make") is None:
        raise BuildError("make not found on PATH: cannot build gpt2_optim")
    log(f"building gpt2_optim: {' '.join(cmd)} (in {trees.gpt2optim})")
    rc, output = run_make(cmd, trees.gpt2optim, quiet=True, label="building gpt2_optim")
    if rc != 0:
        cause = build_hint(output) or make_cause(output)
        raise BuildError(f"gpt2_optim's make failed (exit code {rc}): {cause}\n{tail(output, 12)}",
                         cause=f"gpt2_optim's make failed: {cause}")
    if not trees.program.is_file():
        raise BuildError(f"gpt2_optim's make succeeded but {trees.program} is missing\n"
                         f"{tail(output, 12)}")
    return trees.program


def parse_output(text: str) -> Dict[str, Dict[str, float]]:
    """{variant: {"total_ms", "tokens_per_s"}} of the implementations the program reported."""
    out: Dict[str, Dict[str, float]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        m = _IMPL.match(line)
        if m:
            current = IMPLEMENTATIONS.get(m.group(1).strip())
            if current:
                out[current] = {"total_ms": float(m.group(2))}
            continue
        m = _TPS.match(line)
        if m and current in out:
            out[current]["tokens_per_s"] = float(m.group(1))
            current = None
    return {k: v for k, v in out.items() if "tokens_per_s" in v}


def run_once(program: Path, checkpoint: Path, tokenizer: Optional[Path], batch: int, gen: int,
             timeout: float) -> Dict[str, Dict[str, float]]:
    """One run of the program (greedy, -m 1); its parsed speeds. ExperimentError on failure."""
    cmd = [str(program), "-e", str(checkpoint), "-b", str(batch), "-g", str(gen), "-m", "1"]
    if tokenizer:
        cmd += ["-tk", str(tokenizer)]
    try:
        run = run_captured(cmd, timeout)
    except OSError as e:
        raise ExperimentError(f"cannot start {program}: {e.strerror or e}") from None
    if run.timed_out:
        raise ExperimentError(f"gpt2_optim timed out after {timeout:g} s and was killed")
    found = parse_output(run.stdout)
    if run.returncode != 0 or len(found) < len(IMPLEMENTATIONS):
        why = tail(run.stderr or run.stdout, 3).replace("\n", " | ")
        raise ExperimentError(f"gpt2_optim exited with code {run.returncode}"
                              + ("" if found else " without Token per second lines")
                              + (f": {why}" if why else ""))
    return found


def _row(variant: str, point: Dict[str, Any], runs: List[Dict[str, float]], gpu: Optional[str],
         wall_s: float) -> Dict[str, Any]:
    tps = sorted(r["tokens_per_s"] for r in runs)
    total = statistics.median(r["total_ms"] for r in runs)
    row = base_row(variant, point["batch"], point["gen"], PRECISION, point)
    row.update(gpu=gpu, tokens_per_s_median=statistics.median(tps), tokens_per_s_min=tps[0],
               tokens_per_s_max=tps[-1], total_ms=total, step_ms=total / point["gen"],
               reps=len(runs), wall_s=round(wall_s, 3))
    return row


def run_rows(program: Path, checkpoint: Path, tokenizer: Optional[Path],
             points: Sequence[Dict[str, Any]], warmup: int, repeat: int, timeout: float,
             log: Log, on_row: RowHook, gpu: Optional[str] = None) -> None:
    """For each point (one batch size): ``warmup`` untimed runs, ``repeat`` timed ones; the
    naive and KV-cache rows to ``on_row`` (failed rows when the program fails)."""
    for p in points:
        t0 = time.monotonic()
        label = f"gpt2_optim B={p['batch']} gen={p['gen']}"
        log(f"{label} (warm-up {warmup}; timed {repeat}, each run both implementations) ...")
        try:
            for _ in range(warmup):
                run_once(program, checkpoint, tokenizer, p["batch"], p["gen"], timeout)
            runs = [run_once(program, checkpoint, tokenizer, p["batch"], p["gen"], timeout)
                    for _ in range(repeat)]
        except ExperimentError as e:
            log(f"{label} ... FAILED: {e}")
            failed_rows([p], str(e), on_row)
            continue
        for variant in names.GPT2OPTIM_VARIANTS:
            row = _row(variant, p, [r[variant] for r in runs], gpu, time.monotonic() - t0)
            log(f"{variant} B={p['batch']} gen={p['gen']} ... {row['tokens_per_s_median']:.0f} "
                f"tok/s (timed by gpt2_optim)")
            on_row(row)


def failed_rows(points: Sequence[Dict[str, Any]], error: str, on_row: RowHook) -> None:
    """Every gpt2_optim row failed with the same reason (its build did not work)."""
    for p in points:
        for variant in names.GPT2OPTIM_VARIANTS:
            on_row(failed_row(variant, p["batch"], p["gen"], PRECISION, error, p))


def describe(trees: Trees, cc: int, tokenizer: Optional[Path]) -> Dict[str, Any]:
    """The meta data of the gpt2_optim rows."""
    return {"gpt2_optim": str(trees.gpt2optim), "llmc": str(trees.llmc),
            "gpt2_optim_build": " ".join(make_command(trees, cc)),
            "gpt2_optim_program": str(trees.program),
            "gpt2_optim_tokenizer": str(tokenizer) if tokenizer else None,
            "gpt2_optim_timing": "its own program: B x gen / its total time (Token per second)"}
