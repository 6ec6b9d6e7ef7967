"""The contract every action tokenizer keeps, so the sample encoder and trainer can swap them."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class DecodeError(ValueError):
    """A token sequence does not decode to a chunk of the requested shape (``strict=True``)."""


class ClipWarning(UserWarning):
    """Input values fell outside what a tokenizer can represent and were clipped (counted)."""


class ActionTokenizer(Protocol):
    """Encodes normalized action chunks [B, H, D] to token id sequences and back."""

    vocab_size: int

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]: ...

    def decode(
        self,
        tokens: Sequence[Sequence[int]] | np.ndarray,
        *,
        horizon: int | None = None,
        dim: int | None = None,
        strict: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]: ...


def as_chunk_batch(chunks: np.ndarray | Sequence, *, name: str = "chunks") -> np.ndarray:
    """Validates normalized action chunks and returns them as float64 [B, H, D].

    A single chunk [H, D] becomes a batch of one. Non-finite values are an error, not something a
    tokenizer may round into plausible-looking tokens.
    """
    array = np.asarray(chunks, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected [B, H, D] or [H, D], got shape {np.shape(chunks)}")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"{name}: empty horizon or action dimension in shape {array.shape}")
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name}: non-finite value at chunk {bad[0]}, step {bad[1]}, dim {bad[2]}"
        )
    return array


def as_token_lists(tokens: Sequence[Sequence[int]] | np.ndarray) -> list[np.ndarray]:
    """Accepts a list of sequences or a 2-D array (one row per chunk) and returns int64 rows."""
    if isinstance(tokens, np.ndarray) and tokens.ndim == 1:
        raise ValueError("decode expects a batch of token sequences; wrap a single one in a list")
    return [np.asarray(row, dtype=np.int64).reshape(-1) for row in tokens]
