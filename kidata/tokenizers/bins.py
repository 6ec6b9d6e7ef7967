"""Naive per-dimension binning: the paper's "naive tokens" ablation (section 6).

Each kept time step contributes one token per action dimension: the index of a uniform bin over
[low, high] (256 bins over [-1, 1] by default). ``stride`` keeps every stride-th step (the paper's
stride 5) and decoding interpolates linearly between kept steps, holding the last one.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kidata.hashing import json_sha256
from kidata.tokenizers.base import ClipWarning, DecodeError, as_chunk_batch, as_token_lists

BINS_FILE = "kidata_bins.json"


@dataclass(frozen=True)
class BinTokenizer:
    """Same interface as ``FastTokenizer``: ``encode`` chunks -> int32 ids, ``decode`` -> (actions, ok)."""

    n_bins: int = 256
    stride: int = 1
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.n_bins < 2 or self.stride < 1 or not self.high > self.low:
            raise ValueError(f"invalid BinTokenizer settings: {self}")

    @property
    def vocab_size(self) -> int:
        return self.n_bins

    def save(self, path: str | Path) -> Path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BINS_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> "BinTokenizer":
        return cls(**json.loads((Path(path) / BINS_FILE).read_text()))

    @property
    def sha256(self) -> str:
        return json_sha256(asdict(self))

    def kept_steps(self, horizon: int) -> np.ndarray:
        return np.arange(0, horizon, self.stride)

    def tokens_per_chunk(self, horizon: int, dim: int) -> int:
        return len(self.kept_steps(horizon)) * dim

    def encode(self, chunks: np.ndarray | Sequence) -> list[np.ndarray]:
        """Bin ids int32, row-major over [kept step, dimension]; values outside [low, high] are
        clipped to the edge bins, counted and warned about."""
        batch = as_chunk_batch(chunks)[:, self.kept_steps(np.shape(chunks)[-2])]
        outside = int(((batch < self.low) | (batch > self.high)).sum())
        if outside:
            warnings.warn(
                f"bin encode clipped {outside} value(s) outside [{self.low}, {self.high}]",
                ClipWarning,
                stacklevel=2,
            )
        width = (self.high - self.low) / self.n_bins
        ids = np.clip(np.floor((batch - self.low) / width), 0, self.n_bins - 1).astype(np.int32)
        return list(ids.reshape(len(ids), -1))

    def decode(
        self,
        tokens: Sequence[Sequence[int]] | np.ndarray,
        *,
        horizon: int | None = None,
        dim: int | None = None,
        strict: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres, interpolated back to ``horizon`` steps. A sequence of the wrong length or
        with ids outside [0, n_bins) gets ok=False (ids clipped, length padded with the last
        decoded step or truncated); ``strict`` raises instead."""
        if not horizon or not dim:
            raise ValueError("decode needs horizon and dim")
        kept = self.kept_steps(horizon)
        length = len(kept) * dim
        rows = as_token_lists(tokens)
        values = np.zeros((len(rows), len(kept), dim), dtype=np.float64)
        ok = np.ones(len(rows), dtype=bool)
        width = (self.high - self.low) / self.n_bins
        for index, row in enumerate(rows):
            invalid = (row < 0) | (row >= self.n_bins)
            if invalid.any() or row.size != length:
                if strict:
                    raise DecodeError(
                        f"sequence {index}: {row.size} ids for {length} expected, "
                        f"{int(invalid.sum())} outside [0, {self.n_bins})"
                    )
                ok[index] = False
                row = np.clip(row, 0, self.n_bins - 1)[:length]
                if row.size < length:
                    fill = row[-dim:] if row.size >= dim else np.full(dim, self.n_bins // 2)
                    repeats = -(-(length - row.size) // dim)
                    row = np.concatenate([row, np.tile(fill, repeats)])[:length]
            values[index] = (self.low + (row.reshape(len(kept), dim) + 0.5) * width)
        if len(kept) == horizon:
            return values, ok
        steps = np.arange(horizon)
        actions = np.empty((len(rows), horizon, dim), dtype=np.float64)
        for d in range(dim):
            for index in range(len(rows)):
                actions[index, :, d] = np.interp(steps, kept, values[index, :, d])
        return actions, ok
