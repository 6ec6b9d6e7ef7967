"""State encodings (paper, appendix C): text bins in the prompt, special tokens, or continuous.

* ``text``: 256 bins over the normalized range [-1, 1], openpi-compatible
  (``np.digitize(state, np.linspace(-1, 1, 257)[:-1]) - 1``), clipped into [0, 255] with a count of
  the values that fell outside, joined by spaces into the prompt.
* ``special``: one token per dimension, bin b -> a reserved id ``first + b``.
* ``continuous``: no tokens; the normalized vector travels with the sample for the model's learned
  projection (the sample records where in the prefix it goes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kidata.choices import StateEncoding
from kidata.config import choices
from kidata.tokenizers.ranges import TokenRange

STATE_ENCODINGS = choices(StateEncoding)
STATE_BINS = 256
_EDGES = {STATE_BINS: np.linspace(-1, 1, STATE_BINS + 1)[:-1]}


def discretize_state(state: np.ndarray, bins: int = STATE_BINS) -> tuple[np.ndarray, int]:
    """Bin indices int64 [S] and how many values lay outside [-1, 1] (clipped to the end bins)."""
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    edges = _EDGES.get(bins)
    if edges is None:
        edges = _EDGES[bins] = np.linspace(-1, 1, bins + 1)[:-1]
    indices = np.digitize(state, edges) - 1
    clipped = int(np.count_nonzero((state < -1) | (state > 1)))
    return np.maximum(indices, 0), clipped


def state_text(state: np.ndarray) -> tuple[str, int]:
    """The prompt's State part ("12 128 255 ...") and how many values lay outside [-1, 1].

    openpi's bins exactly (``np.digitize(state, linspace(-1, 1, 257)[:-1]) - 1``): a value below -1
    reads "-1", one above 1 "255", so openpi's pi0.5 checkpoints see the prompts they trained on."""
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    indices = np.digitize(state, np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1
    clipped = int(np.count_nonzero((state < -1) | (state > 1)))
    return " ".join(map(str, indices.tolist())), clipped


@dataclass(frozen=True)
class SpecialStateTokens:
    """Reserved ids [first, first + bins) for state bins, one token per dimension."""

    first: int
    bins: int = STATE_BINS

    @property
    def range(self) -> TokenRange:
        return TokenRange("special state tokens", self.first, self.first + self.bins - 1)

    def ids(self, state: np.ndarray) -> tuple[list[int], int]:
        indices, clipped = discretize_state(state, self.bins)
        return (self.first + indices).tolist(), clipped
