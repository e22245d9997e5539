"""Checks before an executable runs, and what to say when it cannot start.

This is the place for what can be known before spending GPU time. Every command that runs the
engine asks here first, with the same :class:`Request`:

- :func:`check_model` reads the checkpoint's header once (its magic, version, limits and size:
  :func:`gpt2driver.files.checkpoint.read_header`) and checks the request against it
  (:func:`check_request`); sweep, compare and bench check each point of their grid against the
  shape of its model the same way (:mod:`gpt2driver.experiments.points`);
- :func:`check_request`: a shape the engine runs (head size), prompt ids inside the vocabulary,
  the prompt and the positions the run needs inside the context, a tokenizer of the model's
  vocabulary;
- :func:`check_run`: the executable is there and runnable;
- :func:`check_timeout`: a timeout the child's wait can take.

Each check raises the error the caller would otherwise meet later (inside the executable, or as a
traceback), with the remedy in the message.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BadInput, CheckpointError, RequestError, RunError, TokenizerError
from ..files.checkpoint import ModelConfig, read_header

# A timeout: at least a second, at most about 11.6 days (the wait of a child takes up to
# 2147483 s; beyond it Python raises OverflowError).
TIMEOUT_MIN_S = 1.0
TIMEOUT_MAX_S = 1_000_000.0
EXECUTABLE_GEN = 64  # the executables' own --gen default (profile does not pass one)


@dataclass(frozen=True)
class Request:
    """What a run asks of the model: ``gen`` new tokens (or positions: profile's warm-up and
    measured steps) after the prompt, which is ``prompt_ids``, else ``prompt_len`` synthetic
    ids, else one EOT token; ``tokenizer_vocab``: the vocabulary of the tokenizer used, if any."""

    batch: int = 1
    gen: int = EXECUTABLE_GEN
    prompt_ids: Optional[Sequence[int]] = None
    prompt_len: Optional[int] = None
    tokenizer_vocab: Optional[int] = None

    @property
    def prompt_tokens(self) -> int:
        if self.prompt_ids is not None:
            return len(self.prompt_ids)
        return self.prompt_len or 1


def profile_positions(warmup: int, steps: int, trace: bool = False) -> int:
    """The positions after the prompt that the profile executable needs: 1 + warm-up + measured
    steps (with --trace the steps twice, + 3), and at least its own --gen default."""
    need = 1 + warmup + steps + ((steps + 3) if trace else 0)
    return max(need, EXECUTABLE_GEN)


def check_shape(cfg: ModelConfig, where: str = "the model") -> None:
    """CheckpointError unless the engine runs this shape."""
    problem = cfg.engine_problem()
    if problem:
        raise CheckpointError(f"{where}: {problem}")


def check_tokens(cfg: ModelConfig, r: Request) -> None:
    """RequestError (a bad command line, exit 2) when the prompt ids or the length do not fit."""
    bad = [i for i in (r.prompt_ids or ()) if not 0 <= int(i) < cfg.vocab_size]
    if bad:
        raise RequestError(f"prompt token {bad[0]} is outside the model's vocabulary "
                           f"0..{cfg.vocab_size - 1}")
    need = r.prompt_tokens + r.gen
    if need > cfg.max_seq_len:
        raise RequestError(f"prompt ({r.prompt_tokens} tokens) + gen {r.gen} = {need} exceeds the "
                           f"model's max_seq_len {cfg.max_seq_len}")


def check_tokenizer(cfg: ModelConfig, vocab: Optional[int], what: str = "the tokenizer") -> None:
    """TokenizerError when a tokenizer's vocabulary is not the model's."""
    if vocab is not None and vocab != cfg.vocab_size:
        raise TokenizerError(f"{what} has {vocab} tokens but the model's vocab_size is "
                             f"{cfg.vocab_size}: give the model's own tokenizer (--tokenizer)")


def check_request(cfg: ModelConfig, r: Request, where: str = "the model") -> None:
    """Everything about the model and the request, before anything runs."""
    check_shape(cfg, where)
    check_tokens(cfg, r)
    check_tokenizer(cfg, r.tokenizer_vocab)


def check_model(checkpoint: Path, r: Request) -> ModelConfig:
    """The checkpoint's header, read once and fully checked, with the request checked against
    it; CheckpointError naming the file when it is not readable."""
    cfg = read_header(checkpoint)[0]
    check_request(cfg, r, str(checkpoint))
    return cfg


def check_timeout(value) -> float:
    """The timeout as a float; BadInput unless it is a number of seconds in the range."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"timeout: expected a number of seconds, got {value!r}") from None
    if not (math.isfinite(t) and TIMEOUT_MIN_S <= t <= TIMEOUT_MAX_S):
        raise BadInput(f"timeout: must be {TIMEOUT_MIN_S:g} to {TIMEOUT_MAX_S:g} seconds, "
                       f"got {value}")
    return t


def cannot_start(path: Path, e: OSError) -> str:
    """The message for an executable the OS would not start."""
    hint = " (build it with: gpt2driver build)" if not Path(path).exists() else ""
    return f"cannot start {path}: {e.strerror or e}{hint}"


def check_executable(path: Path) -> None:
    """RunError unless ``path`` is a file this process may execute."""
    path = Path(path)
    if not path.is_file():
        raise RunError(cannot_start(path, FileNotFoundError(2, "No such file or directory")))
    if not os.access(path, os.X_OK):
        raise RunError(cannot_start(path, PermissionError(13, "Permission denied")))


def check_run(binary: Path) -> None:
    """Everything checked before ``binary`` runs."""
    check_executable(binary)
