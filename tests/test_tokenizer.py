"""Tests of gpt2driver.files.tokenizer: the llm.c tokenizer file and tiktoken encodings built from it."""

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tiktoken

import buildutil as bu

from gpt2driver.files import tokenizer as tz
from gpt2driver.files.tokenizer import TokenizerError

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2_TOKENIZER = REPO_ROOT.parent / "shared" / "data" / "gpt2_tokenizer.bin"

# A tiny byte-level BPE vocabulary: all 256 bytes (id = byte value), merges whose parts are
# tokens with lower ids, then EOT.
MERGES = [b"he", b"ll", b"llo", b"hello", b" w", b"or", b" wor", b"ld", b" world", b"\xc3\xa9"]
TINY_TOKENS = [bytes([b]) for b in range(256)] + MERGES + [b"<|endoftext|>"]
TINY_EOT = len(TINY_TOKENS) - 1


def tiny_file(tmp_path, name="tok.bin"):
    return tz.write_tokenizer(tmp_path / name, TINY_TOKENS, TINY_EOT)


# ------------------------------------------------------------------------------- file format


def test_v2_round_trip_and_layout(tmp_path):
    path = tiny_file(tmp_path)
    data = path.read_bytes()
    assert struct.unpack("<4i", data[:16]) == (20240328, 2, len(TINY_TOKENS), TINY_EOT)
    assert not any(data[16:1024])
    assert data[1024:] == bu.token_records(TINY_TOKENS)
    tok = tz.read_tokenizer(path)
    assert tok.tokens == TINY_TOKENS and tok.eot_id == TINY_EOT and tok.version == 2
    assert tok.vocab_size == len(TINY_TOKENS)
    assert os.listdir(tmp_path) == ["tok.bin"]


def test_v1_round_trip_without_eot(tmp_path):
    path = tz.write_tokenizer(tmp_path / "v1.bin", TINY_TOKENS, None, version=1)
    assert struct.unpack("<4i", path.read_bytes()[:16]) == (20240328, 1, len(TINY_TOKENS), 0)
    tok = tz.read_tokenizer(path)
    assert tok.tokens == TINY_TOKENS and tok.eot_id is None and tok.version == 1


def test_v1_with_gpt2_vocab_size_implies_eot(tmp_path):
    tokens = [str(i).encode() for i in range(50257)]
    path = tz.write_tokenizer(tmp_path / "v1.bin", tokens, 50256, version=1)
    tok = tz.read_tokenizer(path)
    assert tok.eot_id == 50256 and tok.version == 1 and tok.tokens[12345] == b"12345"


@pytest.mark.parametrize("tokens, eot, version, message", [
    (TINY_TOKENS, None, 2, "needs an EOT id"),
    (TINY_TOKENS, len(TINY_TOKENS), 2, "needs an EOT id"),
    (TINY_TOKENS, -1, 2, "needs an EOT id"),
    (TINY_TOKENS, TINY_EOT, 1, "version 1 cannot store EOT"),
    (TINY_TOKENS, None, 3, "unsupported tokenizer version"),
    ([], None, 1, "vocab size"),
    ([b"a", b""], 0, 2, "token 1 has 0 bytes"),
    ([b"a", b"x" * 256], 0, 2, "token 1 has 256 bytes"),
])
def test_write_errors(tmp_path, tokens, eot, version, message):
    with pytest.raises(TokenizerError, match=message):
        tz.write_tokenizer(tmp_path / "t.bin", tokens, eot, version=version)
    assert os.listdir(tmp_path) == []


def test_max_length_token_round_trips(tmp_path):
    tokens = [b"a", bytes(range(255))]
    tok = tz.read_tokenizer(tz.write_tokenizer(tmp_path / "t.bin", tokens, 0))
    assert tok.tokens == tokens


def assert_bad(path, *fragments):
    with pytest.raises(TokenizerError) as exc:
        tz.read_tokenizer(path)
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_missing_file(tmp_path):
    assert_bad(tmp_path / "nope.bin", "not found")


def test_short_header(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(b"\x00" * 1000)
    assert_bad(path, "too short", "1024", "1000")


def test_bad_magic(tmp_path):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240326, 2, 1, 0], bu.token_records([b"a"])),
               "bad magic", "20240328", "20240326")


@pytest.mark.parametrize("version", [0, 3, -1])
def test_bad_version(tmp_path, version):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, version, 1, 0], bu.token_records([b"a"])),
               "unsupported version", f"found {version}")


@pytest.mark.parametrize("vocab", [0, -5, 1 << 25])
def test_bad_vocab_size(tmp_path, vocab):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, vocab, 0]), "bad vocab_size",
               f"found {vocab}")


@pytest.mark.parametrize("eot", [-1, 2, 1000])
def test_bad_eot(tmp_path, eot):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, 2, eot], bu.token_records([b"a", b"b"])),
               "bad EOT id", "0..1", f"found {eot}")


def test_v1_ignores_eot_field(tmp_path):
    tok = tz.read_tokenizer(bu.raw_header_file(tmp_path / "t.bin", [20240328, 1, 2, 77],
                                     bu.token_records([b"a", b"b"])))
    assert tok.eot_id is None


def test_truncated_before_a_token(tmp_path):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, 3, 0], bu.token_records([b"a", b"b"])),
               "truncated", "expected 3 tokens", "after 2")


def test_truncated_inside_a_token(tmp_path):
    body = bu.token_records([b"a", b"hello"])[:-2]
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, 2, 0], body),
               "truncated inside token 1", "expected 5 bytes", "found 3")


def test_zero_length_token(tmp_path):
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, 2, 0], b"\x01a\x00"),
               "token 1 has length 0")


def test_trailing_garbage(tmp_path):
    body = bu.token_records([b"a", b"b"]) + b"xyz"
    assert_bad(bu.raw_header_file(tmp_path / "t.bin", [20240328, 2, 2, 0], body),
               "3 unexpected trailing bytes")


# ------------------------------------------------------------------------------- decode


def test_decode(tmp_path):
    tok = tz.read_tokenizer(tiny_file(tmp_path))
    assert tok.decode([259, 264]) == "hello world"
    assert tok.decode(np.array([259, TINY_EOT])) == "hello<|endoftext|>"
    assert tok.decode([0xC3, 0xA9]) == "é"            # a character split over two tokens
    assert tok.decode([265, ord("!")]) == "é!"
    assert tok.decode([0xC3, ord("a")]) == "\ufffda"  # invalid UTF-8 is replaced
    assert tok.decode([]) == ""
    assert tok.token_bytes(258) == b"llo"
    for bad in (-1, len(TINY_TOKENS)):
        with pytest.raises(TokenizerError, match="out of range"):
            tok.decode([bad])


# ------------------------------------------------------------------------------- tiktoken


def test_encoding_from_tiny_file(tmp_path):
    enc = tz.encoding_from_tokenizer_file(tiny_file(tmp_path))
    assert isinstance(enc, tiktoken.Encoding) and enc.name == "gpt2-llmc"
    assert enc.n_vocab == len(TINY_TOKENS) and enc.eot_token == TINY_EOT
    assert enc.encode("hello world") == [259, 264]
    assert enc.encode("héllo") == [ord("h"), 265, 258]
    assert enc.encode("<|endoftext|>hello", allowed_special="all") == [TINY_EOT, 259]
    with pytest.raises(ValueError):
        enc.encode("<|endoftext|>")  # special text is refused unless allowed
    text = "hello, world! héllo wor 42\n\n  ld"
    assert enc.decode(enc.encode(text)) == text


def test_encoding_without_eot(tmp_path):
    path = tz.write_tokenizer(tmp_path / "v1.bin", TINY_TOKENS[:-1], None, version=1)
    enc = tz.encoding_from_tokenizer_file(path)
    assert enc.special_tokens_set == set() and enc.encode("hello") == [259]


def test_encoding_needs_all_bytes(tmp_path):
    path = tz.write_tokenizer(tmp_path / "t.bin", [b"a", b"b", b"<|endoftext|>"], 2)
    with pytest.raises(TokenizerError, match="254 single bytes are not tokens"):
        tz.encoding_from_tokenizer_file(path)


def test_encoding_rejects_duplicates(tmp_path):
    path = tz.write_tokenizer(tmp_path / "t.bin", TINY_TOKENS[:-1] + [b"he", b"<|e|>"], 267)
    with pytest.raises(TokenizerError, match="1 duplicate"):
        tz.encoding_from_tokenizer_file(path)


def test_export_tiktoken_round_trip(tmp_path, monkeypatch):
    enc = tz.encoding_from_tokenizer_file(tiny_file(tmp_path, "src.bin"))
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: enc if name == "tiny" else None)
    out = tz.export_tiktoken(tmp_path / "out.bin", encoding_name="tiny")
    assert out.read_bytes() == (tmp_path / "src.bin").read_bytes()


def _offline(name):
    raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")


def test_export_tiktoken_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tiktoken, "get_encoding", _offline)
    with pytest.raises(TokenizerError, match="network") as exc:
        tz.export_tiktoken(tmp_path / "out.bin")
    assert "export it where the network is" in str(exc.value) and "gpt2" in str(exc.value)
    assert "--tokenizer" not in str(exc.value) and len(str(exc.value)) < 160
    assert not (tmp_path / "out.bin").exists()


def test_get_encoding_sources(tmp_path, monkeypatch):
    path = tiny_file(tmp_path)
    sentinel = object()
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: sentinel)
    monkeypatch.delenv("GPT2DRIVER_TOKENIZER", raising=False)
    assert tz.get_encoding() is sentinel
    assert tz.get_encoding(path).name == "gpt2-llmc"
    assert tz.get_encoding(str(path)).encode("hello") == [259]
    monkeypatch.setenv("GPT2DRIVER_TOKENIZER", str(path))
    assert tz.get_encoding().name == "gpt2-llmc"
    monkeypatch.setenv("GPT2DRIVER_TOKENIZER", str(tmp_path / "missing.bin"))
    with pytest.raises(TokenizerError, match="not found"):
        tz.get_encoding()


def test_get_encoding_offline_without_file(monkeypatch):
    monkeypatch.delenv("GPT2DRIVER_TOKENIZER", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", _offline)
    with pytest.raises(TokenizerError, match="cannot load tiktoken's gpt2 encoding"):
        tz.get_encoding()


# ------------------------------------------------------------------------------- real GPT-2 vocab


@pytest.fixture(scope="module")
def gpt2_file():
    if not GPT2_TOKENIZER.is_file():
        pytest.skip(f"{GPT2_TOKENIZER} not present")
    return GPT2_TOKENIZER


@pytest.fixture(scope="module")
def gpt2_encoding(gpt2_file):
    return tz.encoding_from_tokenizer_file(gpt2_file)


def test_real_gpt2_vocabulary(gpt2_file):
    tok = tz.read_tokenizer(gpt2_file)
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    known = {464: b"The", 383: b" The", 262: b" the", 11: b",", 13: b".", 198: b"\n",
             15496: b"Hello", 995: b" world", 50256: b"<|endoftext|>"}
    for token_id, text in known.items():
        assert tok.tokens[token_id] == text, token_id
    assert tok.decode([15496, 995, 13]) == "Hello world."
    assert sorted(tok.tokens[:256]) != tok.tokens[:256]  # GPT-2 orders bytes printable-first


def test_real_gpt2_encoding(gpt2_encoding):
    enc = gpt2_encoding
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("The cat") == [464, 3797]
    paragraph = ("It was the best of times, it was the worst of times; we'll see what they've "
                 "done in 1859 -- naïve café, 東京, emoji \U0001F600!\n\n    indented\tline  ")
    ids = enc.encode(paragraph)
    assert enc.decode(ids) == paragraph
    assert len(ids) < len(paragraph.encode())  # merges really happen
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_real_gpt2_export_reproduces_file(gpt2_file, gpt2_encoding, tmp_path, monkeypatch):
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: gpt2_encoding)
    out = tz.export_tiktoken(tmp_path / "gpt2.bin")
    assert out.read_bytes() == gpt2_file.read_bytes()
