"""How a policy's predicted action chunks become one action per control step.

A chunk policy predicts ``action_horizon`` actions per observation; the evaluator asks for a new
chunk every ``replan`` steps. What it executes in between is one of two rules:

* the newest chunk's actions in order (openpi's and LeRobot's action queue; the default);
* ACT's temporal ensembling (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with
  Low-Cost Hardware", section 3.2): every chunk still covering the step votes for it, and the
  action is their weighted mean with weights ``exp(-decay * i)``, ``i = 0`` for the oldest. A
  positive decay lets a new observation move the action gradually (ACT uses 0.01, nearly a plain
  mean); a negative one favours the newest chunk. It smooths a policy whose consecutive chunks
  disagree (one replan descending, the next holding still), at the price of reacting late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kidata.training.config import PolicyConfig


class ChunkExecutor:
    """One episode's chunks -> one action per step. ``needs_chunk(step)`` says when to query the
    policy, ``add(step, chunk)`` records its [horizon, action_dim] prediction made at ``step``,
    ``action(step)`` is what runs at ``step`` ([action_dim] float64)."""

    def __init__(self, replan: int, ensemble: float | None = None):
        if replan < 1:
            raise ValueError(f"replan must be >= 1 (actions executed per predicted chunk), got {replan}")
        if ensemble is not None and (isinstance(ensemble, bool) or not isinstance(ensemble, (int, float))
                                     or not math.isfinite(ensemble)):
            raise ValueError(f"temporal ensemble decay must be a finite number (ACT uses 0.01), got {ensemble!r}")
        self.replan = replan
        self.ensemble = None if ensemble is None else float(ensemble)
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step asked at, [horizon, dim]), oldest first

    def needs_chunk(self, step: int) -> bool:
        if not self._chunks:
            return True
        start, chunk = self._chunks[-1]
        return step - start >= min(self.replan, len(chunk))

    def add(self, step: int, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or len(chunk) == 0:
            raise ValueError(f"a predicted chunk must be [horizon >= 1, action_dim], got shape {chunk.shape}")
        self._chunks.append((step, chunk))
        self._chunks = [(start, old) for start, old in self._chunks if start + len(old) > step]

    def action(self, step: int) -> np.ndarray:
        start, chunk = self._chunks[-1]
        if self.ensemble is None:
            return chunk[step - start].copy()
        votes = [old[step - begin] for begin, old in self._chunks if begin <= step < begin + len(old)]
        weights = np.exp(-self.ensemble * np.arange(len(votes)))
        return (weights[:, None] * np.stack(votes)).sum(axis=0) / weights.sum()


@dataclass(frozen=True)
class Chunking:
    """Which of the two rules an evaluation executes: each chunk's first ``replan`` actions, or
    with ``ensemble`` (ACT's decay) the temporal ensemble. Checked when an executor is made."""

    replan: int = PolicyConfig.replan
    ensemble: float | None = None

    @classmethod
    def of(cls, policy: Any) -> "Chunking":
        """A policy's own: a ``kidata.policy.Policy`` carries its run's ``[policy]`` replan and
        temporal_ensemble (``Policy.settings``); a policy without settings (the scripted expert,
        random actions) gets a run's defaults."""
        settings = getattr(policy, "settings", None)
        return cls() if settings is None else cls(settings.replan, settings.temporal_ensemble)

    def executor(self) -> ChunkExecutor:
        """One episode's executor (refuses a replan below 1 or a decay that is not a finite number)."""
        return ChunkExecutor(self.replan, self.ensemble)
