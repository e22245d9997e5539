"""Running one executable for a person: ``gpt2driver run`` (text in, text and speed out) and
``gpt2driver validate`` (the cached variants against naive). Each builds what is stale, finds the
checkpoint, checks the executable before it runs, and returns the parsed result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import names
from ..files import models
from ..files import tokenizer as tokenizer_files
from ..errors import TokenizerError
from . import build as build_mod
from . import preflight
from .runner import engine_args, run_binary

Note = Callable[[str], None]


def executables(cc: Optional[int], precision: str, note: Note,
                bin_dir: Optional[str] = None) -> Path:
    """The directory of the executables: ``bin_dir`` as it is, else this repository's build for
    (cc or the detected one, precision), made by make when stale."""
    if bin_dir:
        return Path(bin_dir)
    res = build_mod.make_build(build_mod.resolve_cc(cc), precision, quiet=True)
    if res.rebuilt:
        note(f"built {', '.join(res.rebuilt)} in {res.path}")
    return res.path


def run_program(binary: Path, args: List[str], timeout: float, ok_codes=(0,)):
    preflight.check_run(binary)
    return run_binary(binary, args, timeout=timeout, ok_codes=ok_codes)


@dataclass
class Generation:
    variant: str
    batch: int
    gen: int
    result: Any
    texts: Dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {**self.result.to_dict(), "text": {str(r): t for r, t in self.texts.items()}}

    def report(self) -> str:
        lines = []
        for row, text in self.texts.items():
            lines += [f"--- row {row} ---", text]
        t, nan = self.result.timing, float("nan")
        lines.append(f"--- {self.variant} B={self.batch} gen={self.gen} on "
                     f"{self.result.config.get('device', '?')}: "
                     f"{t.get('tokens_per_s', nan):.1f} tok/s "
                     f"(prefill {t.get('prefill_ms', nan):.2f} ms, "
                     f"{t.get('step_ms', nan):.3f} ms/step)")
        return "\n".join(lines)


def encoding_for(tokenizer: Optional[str], needed: bool, note: Note):
    """The tokenizer's encoding; None (with a one-line note) when there is none and text is not
    needed."""
    try:
        return tokenizer_files.get_encoding(tokenizer)
    except TokenizerError as e:
        if needed:  # the remedy only when no file was given (a given file's error names the file)
            remedy = "" if tokenizer else f"; give --tokenizer FILE (or ${tokenizer_files.ENV_TOKENIZER})"
            raise TokenizerError(f"{e}{remedy}") from None
        note(f"note: no tokenizer: {e}; printing token ids (--tokenizer FILE for text)")
        return None


def fitting_encoding(enc, cfg, tokenizer_file: Optional[Path], note: Note):
    """``enc`` when its vocabulary is the model's; a tokenizer file that is not: TokenizerError
    (pre-flight); tiktoken's default encoding that is not: None, with a note (ids are printed)."""
    if enc is None:
        return None
    if tokenizer_file is not None:
        preflight.check_tokenizer(cfg, enc.n_vocab, f"tokenizer {tokenizer_file}")
        return enc
    if enc.n_vocab != cfg.vocab_size:
        note(f"note: tiktoken's gpt2 encoding ({enc.n_vocab} tokens) is not this model's "
             f"vocabulary ({cfg.vocab_size}): printing token ids")
        return None
    return enc


def generate(variant: str, prompt_text: Optional[str], prompt_ids: Optional[Sequence[int]],
             batch: int, gen: int, sampling: Dict[str, Any], seed: Optional[int],
             tokenizer: Optional[str], precision: str, cc: Optional[int],
             checkpoint: Optional[str], timeout: float, note: Note,
             ablate: str = names.ALL_ON, prompt_len: Optional[int] = None,
             bin_dir: Optional[str] = None) -> Generation:
    """Generate with one variant; the texts decoded (token ids without a tokenizer)."""
    ckpt = models.checkpoint_or_default(checkpoint, precision)
    cfg = preflight.check_model(ckpt, preflight.Request(batch, gen, prompt_len=prompt_len))
    tk_file = tokenizer_files.tokenizer_file(tokenizer)
    enc = fitting_encoding(encoding_for(tokenizer, prompt_text is not None, note), cfg, tk_file,
                           note)
    ids = list(prompt_ids) if prompt_ids is not None else None
    if prompt_text is not None:
        if enc is None:
            raise TokenizerError("tiktoken's gpt2 encoding is not this model's vocabulary: give "
                                 "its tokenizer (--tokenizer FILE) for --prompt, or --prompt-ids")
        ids = enc.encode(prompt_text, allowed_special="all")
        if not ids:
            raise TokenizerError("the prompt is empty (--prompt)")
    preflight.check_tokens(cfg, preflight.Request(batch, gen, ids, prompt_len))
    bins = executables(cc, precision, note, bin_dir)
    args = engine_args(ckpt, tokenizer=tk_file, batch=batch, gen=gen, seed=seed, prompt_ids=ids,
                       prompt_len=prompt_len, quiet=True, ablate=ablate, **sampling)
    res = run_program(bins / variant, args, timeout)
    texts = {row: (enc.decode(p + g) if enc else " ".join(map(str, p + g)))
             for row, (p, g) in sorted(res.tokens.items())}
    return Generation(variant, batch, gen, res, texts)


def validate(batch: int, gen: int, prompt_len: Optional[int], variants: str,
             tolerances: Dict[str, Optional[float]], precision: str, cc: Optional[int],
             checkpoint: Optional[str], timeout: float, note: Note,
             ablate: str = names.ALL_ON, bin_dir: Optional[str] = None):
    """Run the validate executable (exit 0 PASS, 1 FAIL both accepted); its parsed result."""
    ckpt = models.checkpoint_or_default(checkpoint, precision)
    preflight.check_model(ckpt, preflight.Request(batch, gen, prompt_len=prompt_len))
    bins = executables(cc, precision, note, bin_dir)
    args = engine_args(ckpt, batch=batch, gen=gen, prompt_len=prompt_len, quiet=True,
                       ablate=ablate)
    args += ["--variants", variants]
    for flag, value in tolerances.items():
        if value is not None:
            args += [flag, str(value)]
    return run_program(bins / "validate", args, timeout, ok_codes=(0, 1))


def validation_passed(res) -> bool:
    return res.done == 0 and all(s.get("result") == "PASS" for s in res.vsummary)
