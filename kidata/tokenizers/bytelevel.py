"""Byte-level plumbing for FAST: the GPT-2 byte alphabet, code points, reachable bytes.

FAST stores its BPE in a Hugging Face ``tokenizer.json`` with a ByteLevel pre-tokenizer: every
symbol is a UTF-8 byte shown as a printable character (the GPT-2 table).
"""

from __future__ import annotations

import functools

import numpy as np

# The GPT-2 pre-tokenization pattern that tokenizers' ByteLevel(use_regex=True) applies.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# Highest code point a coefficient may map to: the UTF-16 surrogates (U+D800..U+DFFF) cannot be
# held in a Rust string, so the reference processor crashes on them; we stop just below.
MAX_CODE_POINT = 0xD7FF


@functools.lru_cache(maxsize=1)
def byte_to_symbol() -> dict[int, str]:
    """The GPT-2 table: byte value -> printable character used in byte-level vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@functools.lru_cache(maxsize=1)
def symbol_to_byte() -> dict[str, int]:
    return {symbol: b for b, symbol in byte_to_symbol().items()}


def token_bytes(token: str) -> bytes:
    """The raw bytes behind a byte-level vocabulary entry such as ``'Å¢'``."""
    table = symbol_to_byte()
    try:
        return bytes(table[symbol] for symbol in token)
    except KeyError as error:
        raise ValueError(f"vocabulary entry {token!r} is not a byte-level token") from error


def reachable_bytes(max_code_point: int) -> list[int]:
    """Byte values that occur in the UTF-8 encoding of code points 0..max_code_point.

    A fitted vocabulary's base alphabet is exactly this set: any other byte (0xC0, 0xC1, 0xF5..,
    lead bytes of longer sequences) can never come out of the encoder and would waste an id.
    """
    if not 0 <= max_code_point <= MAX_CODE_POINT:
        raise ValueError(f"max_code_point must lie in [0, {MAX_CODE_POINT}], got {max_code_point}")
    text = "".join(map(chr, range(max_code_point + 1)))
    return sorted(set(text.encode("utf-8")))


def id_to_bytes_table(vocab: dict[str, int]) -> list[bytes]:
    """Token id -> raw bytes, for decoding without the tokenizer."""
    table: list[bytes] = [b""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        table[index] = token_bytes(token)
    return table


def code_points(text: str) -> np.ndarray:
    """Code points of a string as uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def from_code_points(codes: np.ndarray) -> str:
    """The string of a 1-D array of code points (all must be valid scalar values)."""
    return np.ascontiguousarray(codes, dtype="<u4").tobytes().decode("utf-32-le")
