"""Normalization of state and actions by a source's statistics, as the build stores them in the
manifest (``NormStats``) and as training, evaluation and the policy undo it. Apart from the
statistics pass (``kidata.pipelines.stats``) because inference needs this and not the build.

* ``quantile`` (default, pi0.5 / FAST): [q01, q99] maps to [-1, 1].
* ``mean_std``: standardized.
Both add openpi's 1e-6 to the range or std, so a (near) constant dimension stays bounded (a
constant one maps to -1, or 0 under mean/std) and unnormalizes back to its value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from kidata.choices import Normalization
from kidata.config import choices

NORMALIZATIONS = choices(Normalization)


@dataclass(frozen=True)
class DimStats:
    """Per-dimension statistics of one key; lists of length D."""

    count: int
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    q01: list[float]
    q99: list[float]
    # the middle quantiles LeRobot's stats.json records (None in statistics written before them)
    q10: list[float] | None = None
    q50: list[float] | None = None
    q90: list[float] | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping) -> "DimStats":
        optional = {k: data[k] for k in ("q10", "q50", "q90") if k in data}
        return cls(**{k: data[k] for k in ("count", "mean", "std", "min", "max", "q01", "q99")}, **optional)

    def suspicious(self, *, min_range: float = 1e-6, outlier_factor: float = 10.0) -> dict[int, str]:
        """Dimensions worth a look: near-zero range, or extremes far beyond q01/q99."""
        flags = {}
        for dim in range(len(self.mean)):
            spread = self.q99[dim] - self.q01[dim]
            if spread < min_range:
                flags[dim] = "near-zero range (normalization maps it to -1, or 0 under mean_std)"
            elif self.max[dim] > self.q99[dim] + outlier_factor * spread or self.min[dim] < self.q01[dim] - outlier_factor * spread:
                flags[dim] = f"extreme outliers (beyond q01/q99 by {outlier_factor:g}x their range)"
        return flags


@dataclass(frozen=True)
class NormStats:
    """Statistics of a source's state and actions, as stored in the manifest."""

    state: DimStats
    actions: DimStats

    def to_json(self) -> dict:
        return {"state": self.state.to_json(), "actions": self.actions.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> "NormStats":
        return cls(DimStats.from_json(data["state"]), DimStats.from_json(data["actions"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        return cls.from_json(json.loads(Path(path).read_text()))



# openpi's epsilon (openpi.transforms.Normalize): added to every quantile range and std, so a
# constant dimension maps to -1 (quantile) or 0 (mean/std) and back exactly, never to its raw value
EPSILON = 1e-6


def normalize(values: np.ndarray, stats: DimStats, mode: str = "quantile") -> np.ndarray:
    """float64 [..., D] -> float64 [..., D]. Quantile: ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1``
    ([q01, q99] to [-1, 1]); mean_std: ``(x - mean) / (std + 1e-6)``; openpi's formulas for every
    dimension, constant ones included."""
    values = np.asarray(values, dtype=np.float64)
    if mode == "quantile":
        low, high = np.asarray(stats.q01), np.asarray(stats.q99)
        return (values - low) / (high - low + EPSILON) * 2.0 - 1.0
    if mode == "mean_std":
        return (values - np.asarray(stats.mean)) / (np.asarray(stats.std) + EPSILON)
    raise ValueError(f"normalization mode must be 'quantile' or 'mean_std', got {mode!r}")


def unnormalize(values: np.ndarray, stats: DimStats, mode: str = "quantile") -> np.ndarray:
    """The inverse of ``normalize``: float64 [..., D] in the source's units."""
    values = np.asarray(values, dtype=np.float64)
    if mode == "quantile":
        low, high = np.asarray(stats.q01), np.asarray(stats.q99)
        return (values + 1.0) / 2.0 * (high - low + EPSILON) + low
    if mode == "mean_std":
        return values * (np.asarray(stats.std) + EPSILON) + np.asarray(stats.mean)
    raise ValueError(f"normalization mode must be 'quantile' or 'mean_std', got {mode!r}")
