"""Sweep configurations (configs/*.yaml): schema, validation and expansion into points.

Keys (lists also accept a single value)::

    name: gpt2_optim            # default: the file name without .yaml
    description: free text
    model: gpt2                 # preset name(s) (random weights), default gpt2 ...
    checkpoint: path/to/model   # ... or one checkpoint file instead of model
    precision: [BF16]           # FP32 FP16 BF16
    variants: [naive, kvonly, optimized]
    batch: [1]
    gen: [64]
    prompt_len: [1]
    sampling: greedy            # or {temperature: 0.8, top_k: 40, top_p: 0.95}
    seed: 1337
    warmup: 1
    repeat: 3
    ablate: [none, graph, graph+pdl]   # optimized with these switches off (none = all on)
    exclude: [{variant: naive, batch: [128, 256]}]   # points matching every key are left out
    timeout_s: 600              # per run of an executable
    cc: 90                      # optional; detected with nvidia-smi otherwise
    copy_gbps: 3000             # or "measure" (torch): adds the % of the decode floor
    profile: {tool: ncu, steps: 16, metrics: [...]}   # profiling configs only

Expanding a config into points: :mod:`gpt2driver.experiments.points`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from .. import names
from ..engine import preflight
from ..errors import BadInput, ConfigError
from ..names import PRECISIONS, PROFILE_TOOLS, VARIANTS
from ..paths import configs_dir, require_checkout
from ..tables.rows import POINT_FIELDS

DEFAULT_CONFIG = "gpt2_optim"
_KEYS = ("name", "description", "model", "checkpoint", "precision", "variants", "batch", "gen",
         "prompt_len", "sampling", "seed", "warmup", "repeat", "ablate", "exclude", "timeout_s",
         "cc", "copy_gbps", "profile")
_SAMPLING_KEYS = ("temperature", "top_k", "top_p")
_PROFILE_KEYS = ("tool", "steps", "warmup", "metrics")


@dataclass
class SweepConfig:
    name: str
    models: List[str] = field(default_factory=lambda: ["gpt2"])
    checkpoint: Optional[str] = None
    precisions: List[str] = field(default_factory=lambda: ["BF16"])
    variants: List[str] = field(default_factory=lambda: list(VARIANTS))
    batch: List[int] = field(default_factory=lambda: [1])
    gen: List[int] = field(default_factory=lambda: [64])
    prompt_len: List[int] = field(default_factory=lambda: [1])
    sampling: Dict[str, Any] = field(default_factory=lambda: {"greedy": True})
    seed: int = 1337
    warmup: int = 1
    repeat: int = 3
    timeout_s: float = 600.0
    ablate: List[str] = field(default_factory=lambda: [names.ALL_ON])
    exclude: List[Dict[str, List[Any]]] = field(default_factory=list)
    cc: Optional[int] = None
    copy_gbps: Union[None, float, str] = None  # a number, or "measure"
    profile: Optional[Dict[str, Any]] = None
    description: str = ""
    source: Optional[Path] = None


def config_path(name: str) -> Path:
    require_checkout()
    return configs_dir() / f"{name}.yaml"


def load_config(path) -> SweepConfig:
    """Read and validate a YAML sweep config."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        cfg = parse_config(data if data is not None else {}, default_name=path.stem)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.source = path
    return cfg


def default_config() -> SweepConfig:
    """The packaged default sweep (configs/gpt2_optim.yaml)."""
    return load_config(config_path(DEFAULT_CONFIG))


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def _as_list(key: str, value: Any) -> List[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{key}: empty list")
        return list(value)
    return [value]


def _int(key: str, value: Any, minimum: int, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}: must be <= {maximum}, got {value}")
    return value


def _ints(key: str, value: Any, minimum: int = 1) -> List[int]:
    return [_int(key, v, minimum) for v in _as_list(key, value)]


def _choices(key: str, value: Any, allowed, fold=str.lower) -> List[str]:
    out = []
    for v in _as_list(key, value):
        norm = fold(str(v))
        if not isinstance(v, str) or norm not in allowed:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(allowed)}")
        out.append(norm)
    return out


def _number(key: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if value > hi or value < lo or (lo_open and value == lo):
        raise ConfigError(f"{key}: must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}")
    return float(value)


def _sampling(value: Any) -> Dict[str, Any]:
    if value is None or value == "greedy":
        return {"greedy": True}
    if not isinstance(value, dict):
        raise ConfigError(f"sampling: expected 'greedy' or a mapping with keys "
                          f"{', '.join(_SAMPLING_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(_SAMPLING_KEYS))
    if unknown:
        raise ConfigError(f"sampling: unknown key {unknown[0]!r}; allowed: {', '.join(_SAMPLING_KEYS)}")
    return {"greedy": False,
            "temperature": _number("sampling.temperature", value.get("temperature", 1.0),
                                   0.0, float("inf"), lo_open=True),
            "top_k": _int("sampling.top_k", value.get("top_k", 0), 0),
            "top_p": _number("sampling.top_p", value.get("top_p", 1.0), 0.0, 1.0, lo_open=True)}


def _profile(value: Any) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"profile: expected a mapping with keys {', '.join(_PROFILE_KEYS)}")
    unknown = sorted(set(value) - set(_PROFILE_KEYS))
    if unknown:
        raise ConfigError(f"profile: unknown key {unknown[0]!r}; allowed: {', '.join(_PROFILE_KEYS)}")
    metrics = value.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("profile.metrics: expected a list of metric names")
    return {"tool": _choices("profile.tool", value.get("tool", "builtin"), PROFILE_TOOLS)[0],
            "steps": _int("profile.steps", value.get("steps", 16), 1),
            "warmup": _int("profile.warmup", value.get("warmup", 8), 0),
            "metrics": metrics}


def _precision(value: str) -> str:
    """The one normaliser's spelling (names.precision); an unknown one as given, upper-cased, for
    the error message."""
    try:
        return names.precision(value)
    except BadInput:
        return value.upper()


def _models(value: Any) -> List[str]:
    return _choices("model", value, tuple(names.MODEL_SIZES))


def _ablate(value: Any) -> List[str]:
    out = []
    for v in _as_list("ablate", value):
        try:
            out.append(names.ablation(v))
        except BadInput as e:
            raise ConfigError(f"ablate: {e}") from None
    return list(dict.fromkeys(out))


def _exclude(value: Any) -> List[Dict[str, List[Any]]]:
    if not isinstance(value, list) or not all(isinstance(e, dict) and e for e in value):
        raise ConfigError("exclude: expected a list of mappings of point fields to values, "
                          "e.g. [{variant: naive, batch: [128, 256]}]")
    for entry in value:
        unknown = sorted(set(entry) - set(POINT_FIELDS))
        if unknown:
            raise ConfigError(f"exclude: unknown field {unknown[0]!r}; "
                              f"allowed: {', '.join(POINT_FIELDS)}")
    return [{k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in e.items()}
            for e in value]


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"timeout_s: expected a number of seconds, got {value!r}")
    try:
        return preflight.check_timeout(value)
    except BadInput as e:
        raise ConfigError(f"timeout_s: {str(e).removeprefix('timeout: ')}") from None


def _copy_gbps(value: Any) -> Union[float, str]:
    if value == "measure":
        return value
    return _number("copy_gbps", value, 0.0, float("inf"), lo_open=True)


def parse_config(data: Any, default_name: str = "sweep") -> SweepConfig:
    """Validate a config mapping (as read from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys ({', '.join(_KEYS)}), got {type(data).__name__}")
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(_KEYS)}")
    if "model" in data and "checkpoint" in data:
        raise ConfigError("model and checkpoint: give one of them, not both")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"name: expected a plain name (used as the results directory), got {name!r}")
    cfg = SweepConfig(name=name, description=str(data.get("description", "")))
    if "model" in data:
        cfg.models = _models(data["model"])
    if "checkpoint" in data:
        if not isinstance(data["checkpoint"], str) or not data["checkpoint"]:
            raise ConfigError(f"checkpoint: expected a file path, got {data['checkpoint']!r}")
        cfg.checkpoint, cfg.models = str(Path(data["checkpoint"]).expanduser()), []
    if "precision" in data:
        cfg.precisions = _choices("precision", data["precision"], PRECISIONS, _precision)
    if "variants" in data:
        cfg.variants = _choices("variants", data["variants"], VARIANTS)
    for key in ("batch", "gen", "prompt_len"):
        if key in data:
            setattr(cfg, key, _ints(key, data[key]))
    cfg.sampling = _sampling(data.get("sampling"))
    cfg.seed = _int("seed", data.get("seed", cfg.seed), 0)
    cfg.warmup = _int("warmup", data.get("warmup", cfg.warmup), 0)
    cfg.repeat = _int("repeat", data.get("repeat", cfg.repeat), 1)
    cfg.timeout_s = _timeout(data.get("timeout_s", cfg.timeout_s))
    if "ablate" in data:
        cfg.ablate = _ablate(data["ablate"])
    if data.get("exclude") is not None:
        cfg.exclude = _exclude(data["exclude"])
    if data.get("cc") is not None:
        cfg.cc = _int("cc", data["cc"], names.MIN_CC, names.MAX_CC)
    if data.get("copy_gbps") is not None:
        cfg.copy_gbps = _copy_gbps(data["copy_gbps"])
    if data.get("profile") is not None:
        cfg.profile = _profile(data["profile"])
    return cfg
