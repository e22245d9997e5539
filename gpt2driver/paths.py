"""Where things live: the repository (Makefile, configs/, results/), the build root and
``$GPT2DRIVER_HOME`` (generated models). The environment is read at each call."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root: the parent of the package directory."""
    return Path(__file__).resolve().parent.parent


def require_checkout() -> Path:
    """The repository root, when the package runs from a checkout (editable install): the
    Makefile, csrc/ and configs/ are there. DriverError in one line otherwise (``pip install .``
    copies the package alone)."""
    from .errors import DriverError

    root = repo_root()
    missing = [n for n in ("Makefile", "csrc", "configs") if not (root / n).exists()]
    if missing:
        raise DriverError(f"this gpt2driver is installed without its repository (no {missing[0]} in "
                          f"{root}): install it from a checkout with pip install -e <checkout>")
    return root


def build_root() -> Path:
    """Where the build directories live: $GPT2DRIVER_BUILD_DIR, else <repo>/build."""
    base = os.environ.get("GPT2DRIVER_BUILD_DIR")
    return Path(base).expanduser() if base else repo_root() / "build"


def gpt2driver_home() -> Path:
    """``$GPT2DRIVER_HOME``, default ``~/.cache/gpt2driver``."""
    return Path(os.environ.get("GPT2DRIVER_HOME") or "~/.cache/gpt2driver").expanduser()


def model_dir() -> Path:
    """Directory of the generated models (``$GPT2DRIVER_HOME/models``)."""
    return gpt2driver_home() / "models"


def results_root() -> Path:
    """``<repo>/results``: the default home of sweep, bench and profile results."""
    return repo_root() / "results"


def configs_dir() -> Path:
    """The configs/ directory at the repository root."""
    return repo_root() / "configs"
