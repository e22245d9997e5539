"""llm.c GPT-2 checkpoint files: read, write, validate, random weights.

File layout (little-endian): a header of 256 int32 -- ``[0]`` magic 20240326, ``[1]`` version
(3 = fp32 tensors, 5 = bf16 tensors), ``[2]`` max_seq_len, ``[3]`` vocab_size, ``[4]`` num_layers,
``[5]`` num_heads, ``[6]`` channels, ``[7]`` padded_vocab_size, the rest 0 -- followed by the 16
parameter tensors of :func:`param_shapes`, concatenated in that order. Linear weights are stored
(out, in); rows of ``wte`` at and beyond ``vocab_size`` are zero padding.

Only numpy is needed. Hugging Face conversion: :mod:`gpt2driver.files.convert`; the generated
models the driver caches: :mod:`gpt2driver.files.models`.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from .. import progress
from ..errors import CheckpointError
from ..names import MODEL_SIZES
from .atomic import atomic_write

PathLike = Union[str, "os.PathLike[str]"]

MAGIC = 20240326
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
VERSION_FP32 = 3
VERSION_BF16 = 5
VERSION_BY_DTYPE = {"fp32": VERSION_FP32, "bf16": VERSION_BF16}
DTYPE_BY_VERSION = {v: k for k, v in VERSION_BY_DTYPE.items()}
BYTES_PER_ELEM = {"fp32": 4, "bf16": 2}
VOCAB_PAD_MULTIPLE = 128

# The header's limits (docs/protocol.md, "Checkpoint header limits"; csrc/model/checkpoint.h holds
# the same): a field outside them makes the file unreadable. The head sizes the engine runs.
MAX_SEQ_LEN = 1 << 20
MAX_VOCAB = 1 << 24
MAX_LAYERS = 1 << 12
MAX_HEADS = 1 << 12
MAX_CHANNELS = 1 << 16
HEADER_LIMITS = {"max_seq_len": MAX_SEQ_LEN, "vocab_size": MAX_VOCAB, "num_layers": MAX_LAYERS,
                 "num_heads": MAX_HEADS, "channels": MAX_CHANNELS, "padded_vocab_size": MAX_VOCAB}
ENGINE_HEAD_SIZES = (32, 64, 128)

# Elements converted/written per chunk, so large tensors are never duplicated whole.
_CHUNK_ELEMS = 1 << 22

_DTYPE_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "f32": "fp32",
    "bf16": "bf16", "bfloat16": "bf16",
}


# --------------------------------------------------------------------------------------------
# Model configuration
# --------------------------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a GPT-2 model, as stored in the checkpoint header."""

    max_seq_len: int
    vocab_size: int
    num_layers: int
    num_heads: int
    channels: int
    padded_vocab_size: int

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise CheckpointError(f"invalid model config: {problem}")

    def problem(self) -> Optional[str]:
        """Return a one-line description of what is wrong with these fields, or None."""
        for name, limit in HEADER_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                return f"{name} must be an integer, found {value!r}"
            if not 0 < value <= limit:
                return f"{name} must be in 1..{limit}, found {value}"
        if self.channels % self.num_heads:
            return (f"channels ({self.channels}) must be a multiple of num_heads "
                    f"({self.num_heads})")
        if self.padded_vocab_size < self.vocab_size:
            return (f"padded_vocab_size ({self.padded_vocab_size}) must be >= vocab_size "
                    f"({self.vocab_size})")
        return None

    def engine_problem(self) -> Optional[str]:
        """Why the engine cannot run a model of this shape (its head size), or None."""
        if self.head_size in ENGINE_HEAD_SIZES:
            return None
        sizes = ", ".join(map(str, ENGINE_HEAD_SIZES[:-1])) + f" or {ENGINE_HEAD_SIZES[-1]}"
        return (f"head size {self.head_size} (channels {self.channels} / num_heads "
                f"{self.num_heads}) is not one the engine runs ({sizes})")

    @property
    def head_size(self) -> int:
        """Channels per attention head."""
        return self.channels // self.num_heads

    @property
    def num_parameters(self) -> int:
        """Number of stored parameters (wte padding rows included)."""
        return sum(math.prod(shape) for _, shape in param_shapes(self))

    def as_dict(self) -> Dict[str, int]:
        """The six fields as a plain dict."""
        return asdict(self)

    @staticmethod
    def preset(name: str) -> "ModelConfig":
        """The configuration of a published GPT-2 size (``gpt2``, ``gpt2-medium``, ...)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise CheckpointError(
                f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None

    @staticmethod
    def custom(layers: int, heads: int, channels: int, max_seq_len: int = 1024,
               vocab_size: int = 50257) -> "ModelConfig":
        """A configuration of any shape; the vocabulary is padded to a multiple of 128."""
        return ModelConfig(max_seq_len=max_seq_len, vocab_size=vocab_size, num_layers=layers,
                           num_heads=heads, channels=channels,
                           padded_vocab_size=_round_up(vocab_size, VOCAB_PAD_MULTIPLE))


PRESETS: Dict[str, ModelConfig] = {name: ModelConfig.custom(*shape) for name, shape in MODEL_SIZES.items()}


def param_shapes(cfg: ModelConfig) -> List[Tuple[str, Tuple[int, ...]]]:
    """Names and shapes of the 16 parameter tensors, in file order."""
    L, C, Vp, T = cfg.num_layers, cfg.channels, cfg.padded_vocab_size, cfg.max_seq_len
    return [
        ("wte", (Vp, C)),
        ("wpe", (T, C)),
        ("ln1w", (L, C)),
        ("ln1b", (L, C)),
        ("qkvw", (L, 3 * C, C)),
        ("qkvb", (L, 3 * C)),
        ("attprojw", (L, C, C)),
        ("attprojb", (L, C)),
        ("ln2w", (L, C)),
        ("ln2b", (L, C)),
        ("fcw", (L, 4 * C, C)),
        ("fcb", (L, 4 * C)),
        ("fcprojw", (L, C, 4 * C)),
        ("fcprojb", (L, C)),
        ("lnfw", (C,)),
        ("lnfb", (C,)),
    ]


def normalize_dtype(dtype: str) -> str:
    """Map a dtype spelling (``fp32``, ``float32``, ``bf16``, ``bfloat16``) to ``fp32``/``bf16``."""
    key = str(dtype).lower()
    if key not in _DTYPE_ALIASES:
        raise CheckpointError(f"unknown checkpoint dtype {dtype!r}; expected 'fp32' or 'bf16'")
    return _DTYPE_ALIASES[key]


def expected_file_bytes(cfg: ModelConfig, dtype: str) -> int:
    """Exact size of a checkpoint file holding ``cfg`` in ``dtype``."""
    return HEADER_BYTES + cfg.num_parameters * BYTES_PER_ELEM[normalize_dtype(dtype)]


# --------------------------------------------------------------------------------------------
# Random parameters
# --------------------------------------------------------------------------------------------


def _iter_random_params(cfg: ModelConfig, seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield GPT-2-like random tensors one at a time, in file order (deterministic in seed)."""
    rng = np.random.default_rng(seed)
    residual_std = 0.02 / math.sqrt(2 * cfg.num_layers)
    for name, shape in param_shapes(cfg):
        a = rng.standard_normal(shape, dtype=np.float32)
        if name in ("ln1w", "ln2w", "lnfw"):
            a *= np.float32(0.1)
            a += np.float32(1.0)
        elif name in ("attprojw", "fcprojw"):
            a *= np.float32(residual_std)
        else:
            a *= np.float32(0.02)
        if name == "wte":
            a[cfg.vocab_size:] = 0.0
        yield name, a


def random_params(cfg: ModelConfig, seed: int = 0) -> Dict[str, np.ndarray]:
    """GPT-2-like random float32 parameters.

    Weights N(0, 0.02); residual projections (attprojw, fcprojw) N(0, 0.02/sqrt(2L)); biases
    N(0, 0.02); LayerNorm weights 1 + N(0, 0.1); LayerNorm biases N(0, 0.02); wte padding rows 0.
    """
    return dict(_iter_random_params(cfg, seed))


# --------------------------------------------------------------------------------------------
# bf16
# --------------------------------------------------------------------------------------------


def f32_to_bf16_bits(a) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); return the uint16 bit patterns.

    Infinities stay infinite, NaNs stay NaN (quiet, sign kept), overflow rounds to infinity.
    """
    a = np.asarray(a, dtype=np.float32)
    bits = np.ascontiguousarray(a).reshape(-1).view(np.uint32)
    # Wrap-around in uint32 can only happen for NaN inputs, which are replaced below.
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(bits.view(np.float32))
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out.reshape(a.shape)


def bf16_bits_to_f32(u16) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    u = np.asarray(u16, dtype=np.uint16)
    return (u.astype(np.uint32) << np.uint32(16)).view(np.float32)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _header(cfg: ModelConfig, version: int) -> np.ndarray:
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[:8] = [MAGIC, version, cfg.max_seq_len, cfg.vocab_size, cfg.num_layers, cfg.num_heads,
             cfg.channels, cfg.padded_vocab_size]
    return h


def header_bytes(cfg: ModelConfig, dtype: str) -> bytes:
    """The 1024 header bytes of a checkpoint of ``cfg`` in ``dtype``."""
    return _header(cfg, VERSION_BY_DTYPE[normalize_dtype(dtype)]).tobytes()


def _write_tensor(f: IO[bytes], a: np.ndarray, dtype: str, shown=None) -> None:
    """Write one tensor chunk by chunk, converting to the file's element type (``shown``: a
    progress bar advanced by the elements written)."""
    flat = np.asarray(a).reshape(-1)
    for start in range(0, flat.size, _CHUNK_ELEMS):
        chunk = flat[start:start + _CHUNK_ELEMS]
        if dtype == "bf16":
            data = f32_to_bf16_bits(chunk).astype("<u2", copy=False)
        else:
            data = np.ascontiguousarray(chunk, dtype="<f4")
        f.write(memoryview(data).cast("B"))
        if shown is not None:
            shown.advance(chunk.size)


def write_stream(path: PathLike, cfg: ModelConfig,
                  tensors: Iterable[Tuple[str, np.ndarray]], dtype: str) -> Path:
    """Write header then tensors (name, array) that must arrive in file order."""
    dtype = normalize_dtype(dtype)
    expected = param_shapes(cfg)
    with atomic_write(path) as f, progress.bar(f"writing {Path(path).name}",
                                               cfg.num_parameters) as shown:
        f.write(_header(cfg, VERSION_BY_DTYPE[dtype]).tobytes())
        written = 0
        for name, a in tensors:
            want_name, want_shape = expected[written] if written < len(expected) else (None, None)
            if name != want_name:
                raise CheckpointError(f"tensor {written}: expected {want_name}, found {name}")
            if tuple(np.shape(a)) != want_shape:
                raise CheckpointError(f"parameter {name}: expected shape {want_shape}, "
                                      f"found {tuple(np.shape(a))}")
            _write_tensor(f, a, dtype, shown)
            written += 1
        if written != len(expected):
            raise CheckpointError(f"expected {len(expected)} tensors, got {written}")
    return Path(path)


def _check_param_names(cfg: ModelConfig, params: Mapping[str, np.ndarray]) -> None:
    expected = [n for n, _ in param_shapes(cfg)]
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise CheckpointError(
            f"parameter names do not match: missing {missing}, unexpected {extra}")


def write_checkpoint(path: PathLike, cfg: ModelConfig, params: Mapping[str, np.ndarray],
                     dtype: str = "fp32") -> Path:
    """Write ``params`` (the 16 tensors of :func:`param_shapes`) as an llm.c checkpoint.

    ``dtype`` is ``"fp32"`` (version 3) or ``"bf16"`` (version 5, round to nearest even).
    The file is written tensor by tensor to a temporary file and renamed into place.
    """
    _check_param_names(cfg, params)
    return write_stream(path, cfg, ((n, params[n]) for n, _ in param_shapes(cfg)), dtype)


def make_random_checkpoint(path: PathLike, cfg: ModelConfig, dtype: str = "bf16",
                           seed: int = 0) -> Path:
    """Write a checkpoint of :func:`random_params` without holding all tensors in memory."""
    return write_stream(path, cfg, _iter_random_params(cfg, seed), dtype)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _raw_header(path: Path) -> Tuple[np.ndarray, int]:
    """Return the 256 header ints and the file size; error if missing or too short."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "a FIFO" if path.is_fifo() else "not a file"
        raise CheckpointError(f"{path}: not a regular file ({kind})")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise CheckpointError(
            f"{path}: file too short: expected at least {HEADER_BYTES} header bytes, found {size}")
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype="<i4", count=HEADER_INTS)
    return header, size


def _parse_header(path: Path, header: np.ndarray, size: int) -> Tuple[ModelConfig, int]:
    """Validate a raw header against itself and against the file size."""
    if header[0] != MAGIC:
        raise CheckpointError(
            f"{path}: bad magic: expected {MAGIC} (llm.c checkpoint), found {int(header[0])}")
    version = int(header[1])
    if version not in DTYPE_BY_VERSION:
        raise CheckpointError(
            f"{path}: unsupported version: expected {VERSION_FP32} (fp32) or {VERSION_BF16} "
            f"(bf16), found {version}")
    fields = dict(zip(("max_seq_len", "vocab_size", "num_layers", "num_heads", "channels",
                       "padded_vocab_size"), (int(x) for x in header[2:8])))
    try:
        cfg = ModelConfig(**fields)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: bad header: {e}") from None
    expected = expected_file_bytes(cfg, DTYPE_BY_VERSION[version])
    if size != expected:
        raise CheckpointError(
            f"{path}: size mismatch: header ({DTYPE_BY_VERSION[version]}, "
            f"{cfg.num_parameters} parameters) implies {expected} bytes, found {size}")
    return cfg, version


def read_header(path: PathLike) -> Tuple[ModelConfig, int]:
    """Read and fully validate a checkpoint header; return (config, version)."""
    path = Path(path)
    return _parse_header(path, *_raw_header(path))


def read_checkpoint(path: PathLike) -> Tuple[ModelConfig, Dict[str, np.ndarray], str]:
    """Read a checkpoint; return (config, float32 parameters by name, ``"fp32"``/``"bf16"``)."""
    path = Path(path)
    cfg, version = read_header(path)
    dtype = DTYPE_BY_VERSION[version]
    file_dtype = "<f4" if dtype == "fp32" else "<u2"
    params: Dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        for name, shape in param_shapes(cfg):
            count = math.prod(shape)
            data = np.fromfile(f, dtype=file_dtype, count=count)
            if data.size != count:
                raise CheckpointError(
                    f"{path}: truncated while reading {name}: expected {count} values, "
                    f"found {data.size}")
            if dtype == "bf16":
                data = bf16_bits_to_f32(data)
            params[name] = data.astype(np.float32, copy=False).reshape(shape)
    return cfg, params, dtype


def checkpoint_info(path: PathLike) -> Dict[str, object]:
    """Describe a checkpoint for display: header fields, sizes, and whether it is valid.

    Never raises for a bad file: ``ok`` is False and ``error`` holds the reason.
    """
    path = Path(path)
    info: Dict[str, object] = {"path": str(path), "magic": None, "version": None, "dtype": None,
                               **{k: None for k in ModelConfig.__dataclass_fields__},
                               "num_parameters": None, "file_bytes": None,
                               "expected_bytes": None, "ok": False, "runnable": False,
                               "engine": None, "error": None}
    try:
        header, size = _raw_header(path)
        info["file_bytes"] = size
        info["magic"], info["version"] = int(header[0]), int(header[1])
        info["dtype"] = DTYPE_BY_VERSION.get(int(header[1]))
        for key, value in zip(ModelConfig.__dataclass_fields__, header[2:8]):
            info[key] = int(value)
        cfg, version = _parse_header(path, header, size)
        info["num_parameters"] = cfg.num_parameters
        info["expected_bytes"] = expected_file_bytes(cfg, DTYPE_BY_VERSION[version])
        info["ok"] = True
        info["engine"] = cfg.engine_problem() or "runs it"
        info["runnable"] = cfg.engine_problem() is None
    except CheckpointError as e:
        info["error"] = str(e)
        with contextlib.suppress(CheckpointError, TypeError):
            cfg = ModelConfig(**{k: info[k] for k in ModelConfig.__dataclass_fields__})
            info["num_parameters"] = cfg.num_parameters
            if info["dtype"]:
                info["expected_bytes"] = expected_file_bytes(cfg, info["dtype"])
    return info


