"""The models the driver makes itself: random weights of each GPT-2 size, written once into
``$GPT2DRIVER_HOME/models`` and reused while their header still matches.

The default model (GPT-2 124M) is ``gpt2_124M_random_<dtype>.bin``; the other sizes are
``<size>_random_<dtype>.bin``. The dtype follows the build precision (bf16 for BF16 and FP16
builds, fp32 for FP32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .. import names
from ..errors import BadInput, CheckpointError
from ..paths import model_dir
from .checkpoint import PRESETS, VERSION_BY_DTYPE, ModelConfig, make_random_checkpoint, read_header

DEFAULT_MODEL_CONFIG = PRESETS[names.DEFAULT_MODEL]
DEFAULT_MODEL_SEED = 0


def checkpoint_dtype(precision: str) -> str:
    """The dtype of the checkpoint a build of ``precision`` reads (CheckpointError if unknown)."""
    try:
        return names.precision_dtype(precision)
    except BadInput as e:
        raise CheckpointError(str(e)) from None


def default_model_path(precision: str) -> Path:
    """Path of the synthetic GPT-2 124M checkpoint used when no checkpoint is given."""
    return model_dir() / f"gpt2_124M_random_{checkpoint_dtype(precision)}.bin"


def size_model_path(size: str, precision: str) -> Path:
    """Path of the random checkpoint of one GPT-2 size (the default model for ``gpt2``)."""
    if size == names.DEFAULT_MODEL:
        return default_model_path(precision)
    ModelConfig.preset(size)  # CheckpointError naming the sizes
    return model_dir() / f"{size}_random_{checkpoint_dtype(precision)}.bin"


def _ensure(path: Path, cfg: ModelConfig, dtype: str) -> Path:
    """``path`` when it holds ``cfg`` in ``dtype``, else a new random checkpoint written there."""
    try:
        if read_header(path) == (cfg, VERSION_BY_DTYPE[dtype]):
            return path
    except CheckpointError:
        pass
    return make_random_checkpoint(path, cfg, dtype=dtype, seed=DEFAULT_MODEL_SEED)


def ensure_default_model(precision: str) -> Path:
    """Return :func:`default_model_path`, generating the file first if it is missing or bad."""
    return _ensure(default_model_path(precision), DEFAULT_MODEL_CONFIG, checkpoint_dtype(precision))


def resolve_model(model: str, precision: str, checkpoint: Optional[str] = None) -> Path:
    """The checkpoint file for a run: the given file (its header checked), or random weights of
    the GPT-2 size ``model``, made once (see the module docstring)."""
    if checkpoint:
        read_header(checkpoint)  # fail early with the checkpoint's own message
        return Path(checkpoint)
    if model == names.DEFAULT_MODEL:
        return ensure_default_model(precision)
    cfg = ModelConfig.preset(model)
    return _ensure(size_model_path(model, precision), cfg, checkpoint_dtype(precision))


def checkpoint_or_default(checkpoint: Optional[str], precision: str) -> Path:
    """The given checkpoint as it is (the executable checks it), or the default model."""
    return Path(checkpoint) if checkpoint else ensure_default_model(precision)


def model_config(path: Path, size: str = names.DEFAULT_MODEL) -> ModelConfig:
    """The shape of a generated model: its header, or the size's shape when the file cannot be
    read (only stand-ins in tests get there: generated models are always written with it)."""
    try:
        return read_header(path)[0]
    except CheckpointError:
        return PRESETS[size]
