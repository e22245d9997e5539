"""llm.c GPT-2 tokenizer files, and tiktoken encodings built from them (no network needed).

File layout (little-endian): a header of 256 int32 -- ``[0]`` magic 20240328, ``[1]`` version
(1 or 2), ``[2]`` vocab_size, ``[3]`` EOT token id (version 2 only), the rest 0 -- then, for each
token id in order, one uint8 length (1..255) followed by that many raw bytes. A version 1 file
has no EOT field: EOT is 50256 when the vocabulary has 50257 tokens, else there is none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np

from ..errors import TokenizerError
from .atomic import atomic_write

PathLike = Union[str, "os.PathLike[str]"]

MAGIC = 20240328
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
VERSIONS = (1, 2)
MAX_VOCAB = 1 << 24
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
EOT_TEXT = "<|endoftext|>"
ENCODING_NAME = "gpt2-llmc"
ENV_TOKENIZER = "GPT2DRIVER_TOKENIZER"
# GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, white space.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _v1_eot(vocab_size: int) -> Optional[int]:
    """The EOT id implied by a version 1 file, which does not store one."""
    return GPT2_EOT_ID if vocab_size == GPT2_VOCAB_SIZE else None


@dataclass
class Tokenizer:
    """The byte strings of a vocabulary, indexed by token id."""

    tokens: List[bytes]
    eot_id: Optional[int]
    version: int = 2

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return len(self.tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token."""
        if not 0 <= token_id < len(self.tokens):
            raise TokenizerError(f"token id {token_id} out of range 0..{len(self.tokens) - 1}")
        return self.tokens[token_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Join the tokens' bytes and decode them as UTF-8 (invalid bytes become U+FFFD)."""
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")


def read_tokenizer(path: PathLike) -> Tokenizer:
    """Read and validate an llm.c tokenizer file (version 1 or 2)."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file not found")
    data = path.read_bytes()
    if len(data) < HEADER_BYTES:
        raise TokenizerError(f"{path}: file too short: expected at least {HEADER_BYTES} header "
                             f"bytes, found {len(data)}")
    header = np.frombuffer(data, dtype="<i4", count=HEADER_INTS)
    magic, version, vocab_size, eot = (int(x) for x in header[:4])
    if magic != MAGIC:
        raise TokenizerError(
            f"{path}: bad magic: expected {MAGIC} (llm.c tokenizer), found {magic}")
    if version not in VERSIONS:
        raise TokenizerError(f"{path}: unsupported version: expected 1 or 2, found {version}")
    if not 0 < vocab_size <= MAX_VOCAB:
        raise TokenizerError(f"{path}: bad vocab_size: expected 1..{MAX_VOCAB}, found {vocab_size}")
    if version == 1:
        eot_id = _v1_eot(vocab_size)
    elif 0 <= eot < vocab_size:
        eot_id = eot
    else:
        raise TokenizerError(
            f"{path}: bad EOT id: expected 0..{vocab_size - 1}, found {eot}")

    tokens: List[bytes] = []
    pos, end = HEADER_BYTES, len(data)
    for i in range(vocab_size):
        if pos >= end:
            raise TokenizerError(f"{path}: truncated: expected {vocab_size} tokens, "
                                 f"file ends after {i}")
        length = data[pos]
        if length == 0:
            raise TokenizerError(f"{path}: token {i} has length 0 (expected 1..255)")
        if pos + 1 + length > end:
            raise TokenizerError(f"{path}: truncated inside token {i}: expected {length} bytes, "
                                 f"found {end - pos - 1}")
        tokens.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos != end:
        raise TokenizerError(f"{path}: {end - pos} unexpected trailing bytes after "
                             f"{vocab_size} tokens")
    return Tokenizer(tokens=tokens, eot_id=eot_id, version=version)


def write_tokenizer(path: PathLike, tokens: Iterable[bytes], eot_id: Optional[int],
                    version: int = 2) -> Path:
    """Write an llm.c tokenizer file atomically.

    Version 2 stores ``eot_id`` (required); version 1 cannot store it, so ``eot_id`` must be
    the implied value (50256 for a 50257-token vocabulary, else None).
    """
    tokens = [bytes(t) for t in tokens]
    vocab_size = len(tokens)
    if version not in VERSIONS:
        raise TokenizerError(f"unsupported tokenizer version {version}; expected 1 or 2")
    if not 0 < vocab_size <= MAX_VOCAB:
        raise TokenizerError(f"vocab size must be in 1..{MAX_VOCAB}, found {vocab_size}")
    if version == 2 and (eot_id is None or not 0 <= eot_id < vocab_size):
        raise TokenizerError(f"version 2 needs an EOT id in 0..{vocab_size - 1}, found {eot_id}")
    if version == 1 and eot_id != _v1_eot(vocab_size):
        raise TokenizerError(f"version 1 cannot store EOT id {eot_id}; for {vocab_size} tokens "
                             f"it implies {_v1_eot(vocab_size)} (use version 2)")
    for i, t in enumerate(tokens):
        if not 1 <= len(t) <= 255:
            raise TokenizerError(f"token {i} has {len(t)} bytes; expected 1..255")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [MAGIC, version, vocab_size]
    if version == 2:
        header[3] = eot_id
    path = Path(path)
    with atomic_write(path) as f:
        f.write(header.tobytes())
        f.write(b"".join(bytes([len(t)]) + t for t in tokens))
    return path


def encoding_from_tokenizer_file(path: PathLike):
    """Build a tiktoken Encoding named ``gpt2-llmc`` from an llm.c tokenizer file.

    The token ids are used as BPE merge ranks (true for GPT-2's vocabulary) and EOT becomes the
    special token ``<|endoftext|>``. Needs every single byte to be a token.
    """
    import tiktoken

    tok = read_tokenizer(path)
    ranks = {t: i for i, t in enumerate(tok.tokens) if i != tok.eot_id}
    expected = tok.vocab_size - (tok.eot_id is not None)
    if len(ranks) != expected:
        raise TokenizerError(f"{path}: {expected - len(ranks)} duplicate token byte strings")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path}: not a byte-level BPE vocabulary: {len(missing)} single "
                             f"bytes are not tokens (first: {missing[0]:#04x})")
    special = {EOT_TEXT: tok.eot_id} if tok.eot_id is not None else {}
    return tiktoken.Encoding(ENCODING_NAME, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=special)


def _tiktoken_encoding(encoding_name: str):
    """tiktoken's named encoding, with download failures turned into a TokenizerError."""
    import tiktoken

    try:
        return tiktoken.get_encoding(encoding_name)
    except Exception as e:  # network errors come as requests/urllib/OSError types
        raise TokenizerError(f"cannot load tiktoken's {encoding_name} encoding "
                             f"({type(e).__name__}: no network for its first download?)") from None


def export_tiktoken(path: PathLike, encoding_name: str = "gpt2") -> Path:
    """Write a tiktoken encoding (default GPT-2's) as a version 2 llm.c tokenizer file."""
    try:
        enc = _tiktoken_encoding(encoding_name)
    except TokenizerError as e:
        raise TokenizerError(f"{e}: export it where the network is, and copy the file here"
                             ) from None
    tokens = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)]
    return write_tokenizer(path, tokens, enc.eot_token, version=2)


def tokenizer_file(tokenizer_path: Optional[PathLike] = None) -> Optional[Path]:
    """The llm.c tokenizer file in use: ``tokenizer_path``, else ``$GPT2DRIVER_TOKENIZER``, else
    None (tiktoken's encoding)."""
    path = tokenizer_path or os.environ.get(ENV_TOKENIZER)
    return Path(path) if path else None


def get_encoding(tokenizer_path: Optional[PathLike] = None):
    """The GPT-2 tiktoken Encoding: from ``tokenizer_path`` if given, else from the file named
    by ``$GPT2DRIVER_TOKENIZER``, else ``tiktoken.get_encoding("gpt2")``."""
    path = tokenizer_file(tokenizer_path)
    if path:
        return encoding_from_tokenizer_file(path)
    return _tiktoken_encoding("gpt2")
