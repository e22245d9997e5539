"""Running one point: its build and model prepared once, its executable run, its row made."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import names
from ..engine import build as build_mod
from ..engine import preflight
from ..engine.runner import engine_args, run_binary
from ..errors import BuildError, RunError
from ..files import models
from ..tables.rows import make_row


def point_args(point: Dict[str, Any], checkpoint: Path) -> List[str]:
    """The executable's command line for a point (its ablation switches included)."""
    return engine_args(checkpoint, batch=point["batch"], gen=point["gen"],
                       greedy=point["sampling"] == "greedy", temperature=point["temperature"],
                       top_k=point["top_k"], top_p=point["top_p"], seed=point["seed"],
                       prompt_len=point["prompt_len"], warmup=point["warmup"],
                       repeat=point["repeat"], quiet=True,
                       ablate=point.get("ablate") or names.ALL_ON)


class PointRunner:
    """Runs points on one GPU; builds each precision and resolves each model once.

    ``gpu_index`` pins the executables to one GPU (CUDA_VISIBLE_DEVICES, in nvidia-smi's order);
    None leaves the environment alone (the default GPU). ``bin_dir``: run the executables found
    there (another build tree) instead of building this repository's. ``extra_args`` go to every
    executable after the point's own (a diagnostic such as --one-layer-weights; the rows do not
    record them, so only a comparison that stores nothing uses them).
    """

    def __init__(self, cc: int, timeout_s: float, jobs: Optional[int] = None,
                 gpu_index: Optional[int] = None, bin_dir: Optional[Path] = None,
                 extra_args: Sequence[str] = ()):
        self.cc, self.timeout_s, self.jobs = cc, timeout_s, jobs
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.extra_args = list(extra_args)
        self.bins: Dict[str, Any] = {}    # precision -> Path, or the exception
        self.models: Dict[tuple, Any] = {}  # (model, precision, checkpoint) -> Path, or exception
        self.gpu: Optional[str] = None
        self.gpu_index = gpu_index
        self.last_error: Optional[str] = None  # the full message of the last failure (stderr tail)

    def for_gpu(self, gpu_index: int) -> "PointRunner":
        """A runner pinned to one GPU that shares this one's builds and models (prepare them
        first: the caches are only read from the workers' threads)."""
        other = PointRunner(self.cc, self.timeout_s, self.jobs, gpu_index, self.bin_dir,
                            self.extra_args)
        other.bins, other.models = self.bins, self.models
        return other

    def preset(self, precision: str, model: str, checkpoint: Optional[str], bin_dir, ckpt) -> None:
        """Use an existing binary directory and checkpoint for these keys (no build, no model
        generation): how a Slurm shard runs what the submitting host prepared."""
        self.bins[precision] = Path(bin_dir)
        self.models[(model, precision, checkpoint)] = Path(ckpt)

    def env(self) -> Optional[Dict[str, str]]:
        if self.gpu_index is None:
            return None
        # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi by PCI bus.
        return {"CUDA_VISIBLE_DEVICES": str(self.gpu_index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    @staticmethod
    def _cached(cache: Dict, key, make):
        if key not in cache:
            try:
                cache[key] = make()
            except Exception as e:  # BuildError, CheckpointError, OSError: kept for every point
                cache[key] = e
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    def _build(self, precision: str) -> Path:
        if self.bin_dir is not None:
            return self.bin_dir
        return build_mod.build(self.cc, precision, jobs=self.jobs, quiet=True)

    def prepare(self, precision: str, model: str, checkpoint: Optional[str] = None):
        """(binary directory, checkpoint path); raises BuildError / CheckpointError."""
        bins = self._cached(self.bins, precision, lambda: self._build(precision))
        ckpt = self._cached(self.models, (model, precision, checkpoint),
                            lambda: models.resolve_model(model, precision, checkpoint))
        return Path(bins), Path(ckpt)

    def run(self, p: Dict[str, Any]) -> Dict[str, Any]:
        """Run one point; the row records either its results or why it failed."""
        t0 = time.monotonic()
        result, error = None, None
        try:
            bin_dir, ckpt = self.prepare(p["precision"], p["model"], p["checkpoint"])
            binary = bin_dir / p["variant"]
            preflight.check_run(binary)
            env = self.env()
            kw = {"env": env} if env is not None else {}
            args = point_args(p, ckpt) + self.extra_args
            result = run_binary(binary, args, timeout=self.timeout_s, **kw)
        except BuildError as e:
            error, self.last_error = f"build failed: {e.cause}", str(e)
        except RunError as e:
            error, self.last_error = str(e).splitlines()[0], str(e)
        except Exception as e:  # model preparation (CheckpointError, OSError)
            error = self.last_error = f"model: {e}"
        row = make_row(p, result, error, gpu=self.gpu, cc=self.cc, wall_s=time.monotonic() - t0,
                       gpu_index=self.gpu_index)
        self.gpu = row["gpu"] or self.gpu
        return row

    def prepare_points(self, points: List[Dict[str, Any]]) -> None:
        """Build every precision and resolve every model the points need, once; failures are
        kept and reported by run() for each point concerned."""
        for p in points:
            try:
                self.prepare(p["precision"], p["model"], p["checkpoint"])
            except Exception:
                pass
