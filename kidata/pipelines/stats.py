"""Normalization statistics: computed by many workers, merged into the statistics of the whole.

Quantiles come from a log-bucket sketch (the DDSketch mapping: bucket k holds magnitudes in
(gamma^(k-1), gamma^k], gamma = (1 + a) / (1 - a)) with exact integer counts, so merging parts is
exact, commutative and associative: the same data gives the same quantiles however it was split
and in whatever order parts were merged. Error bound: for relative accuracy a (default 1e-3) the
reported q-quantile v satisfies |v - x| <= a * |x| for x the data value of rank q (magnitudes below
1e-9 count as 0), and it is clamped to the exact [min, max]. We vectorize the mapping with numpy
because the ddsketch package adds one value per Python call (measured: far too slow for a pass
over millions of steps).

Means and standard deviations are kept as per-part (count, mean, M2) summaries and combined in a
canonical order when read, so they too are independent of merge order, and equal across different
splits of the data up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kidata.delta import check_delta_mask, episode_delta_chunks
from kidata.normalize import DimStats, NormStats

MIN_MAGNITUDE = 1e-9


class QuantileSketch:
    """Per-dimension log-bucket counts of values [N, D]; mergeable with exact integer counts."""

    def __init__(self, dims: int, relative_accuracy: float = 1e-3) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must lie in (0, 1)")
        self.dims = dims
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        # Bucket keys: +k for positive magnitudes in bucket k, -k for negative, None-like 0 slot
        # kept separately as zero_counts.
        self.positive: list[dict[int, int]] = [{} for _ in range(dims)]
        self.negative: list[dict[int, int]] = [{} for _ in range(dims)]
        self.zeros = np.zeros(dims, dtype=np.int64)
        self.count = 0
        self.minimum = np.full(dims, np.inf)
        self.maximum = np.full(dims, -np.inf)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, values: np.ndarray) -> None:
        """Buffers rows and buckets them in batches (counts are exact, so batching is invisible)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, self.dims)
        if len(values):
            self._pending.append(values)
            self._pending_rows += len(values)
            if self._pending_rows >= 1 << 16:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = np.concatenate(self._pending)
        self._pending, self._pending_rows = [], 0
        self.count += len(values)
        self.minimum = np.minimum(self.minimum, values.min(axis=0))
        self.maximum = np.maximum(self.maximum, values.max(axis=0))
        magnitude = np.abs(values)
        small = magnitude < MIN_MAGNITUDE
        self.zeros = self.zeros + small.sum(axis=0)  # not in place: arrays may arrive read-only (Ray)
        keys = np.ceil(np.log(np.where(small, 1.0, magnitude)) / self._log_gamma).astype(np.int64)
        for dim in range(self.dims):
            for store, selector in ((self.positive, values[:, dim] > 0), (self.negative, values[:, dim] < 0)):
                chosen = keys[selector & ~small[:, dim], dim]
                if chosen.size:
                    unique, counts = np.unique(chosen, return_counts=True)
                    bucket = store[dim]
                    for key, count in zip(unique.tolist(), counts.tolist()):
                        bucket[key] = bucket.get(key, 0) + count

    def merge(self, other: "QuantileSketch") -> "QuantileSketch":
        if (other.dims, other.relative_accuracy) != (self.dims, self.relative_accuracy):
            raise ValueError("cannot merge sketches of different dims or accuracy")
        self._flush()
        other._flush()
        for mine, theirs in zip(self.positive + self.negative, other.positive + other.negative):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.zeros = self.zeros + other.zeros
        self.count += other.count
        self.minimum = np.minimum(self.minimum, other.minimum)
        self.maximum = np.maximum(self.maximum, other.maximum)
        return self

    def _value(self, key: int) -> float:
        return 2.0 * self.gamma**key / (self.gamma + 1.0)

    def quantile(self, q: float) -> np.ndarray:
        """float64 [D]: the q-quantile (rank q * (count - 1), lower) of each dimension."""
        self._flush()
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        rank = q * (self.count - 1)
        result = np.empty(self.dims)
        for dim in range(self.dims):
            ordered = [(-self._value(k), c) for k, c in sorted(self.negative[dim].items(), reverse=True)]
            ordered.append((0.0, int(self.zeros[dim])))
            ordered += [(self._value(k), c) for k, c in sorted(self.positive[dim].items())]
            seen = 0
            value = ordered[-1][0]
            for value, count in ordered:  # noqa: B007  (value: the one where the loop stops)
                seen += count
                if seen > rank:
                    break
            result[dim] = min(max(value, self.minimum[dim]), self.maximum[dim])
        return result

    def to_json(self) -> dict:
        self._flush()
        return {
            "dims": self.dims,
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
            "zeros": self.zeros.tolist(),
            "positive": [sorted(d.items()) for d in self.positive],
            "negative": [sorted(d.items()) for d in self.negative],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "QuantileSketch":
        sketch = cls(int(data["dims"]), float(data["relative_accuracy"]))
        sketch.count = int(data["count"])
        sketch.minimum = np.asarray(data["min"], dtype=np.float64)
        sketch.maximum = np.asarray(data["max"], dtype=np.float64)
        sketch.zeros = np.asarray(data["zeros"], dtype=np.int64)
        sketch.positive = [{int(k): int(c) for k, c in d} for d in data["positive"]]
        sketch.negative = [{int(k): int(c) for k, c in d} for d in data["negative"]]
        return sketch


@dataclass
class RunningStats:
    """Statistics of one array key (e.g. actions) over many steps: moments + quantile sketch."""

    dims: int
    sketch: QuantileSketch = None  # type: ignore[assignment]
    parts: list[tuple[int, tuple[float, ...], tuple[float, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.sketch is None:
            self.sketch = QuantileSketch(self.dims)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1, self.dims)
        if not len(values):
            return
        self.sketch.add(values)
        mean = [math.fsum(column) / len(values) for column in values.T]
        m2 = [math.fsum((column - m) ** 2) for column, m in zip(values.T, mean)]
        self.parts.append((len(values), tuple(mean), tuple(m2)))

    def merge(self, other: "RunningStats") -> "RunningStats":
        if other.dims != self.dims:
            raise ValueError(f"cannot merge statistics of {other.dims} and {self.dims} dimensions")
        self.sketch.merge(other.sketch)
        self.parts.extend(other.parts)
        return self

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """mean and population std [D], parts combined in a canonical order (Chan et al.)."""
        count, mean, m2 = 0, np.zeros(self.dims), np.zeros(self.dims)
        for part_count, part_mean, part_m2 in sorted(self.parts):
            part_mean, part_m2 = np.asarray(part_mean), np.asarray(part_m2)
            total = count + part_count
            delta = part_mean - mean
            mean = mean + delta * part_count / total
            m2 = m2 + part_m2 + delta**2 * count * part_count / total
            count = total
        return mean, np.sqrt(m2 / max(count, 1))

    def finalize(self) -> "DimStats":
        mean, std = self.moments()
        q01, q99 = self.sketch.quantile(0.01), self.sketch.quantile(0.99)
        return DimStats(
            count=self.sketch.count,
            mean=mean.tolist(),
            std=std.tolist(),
            min=self.sketch.minimum.tolist(),
            max=self.sketch.maximum.tolist(),
            q01=q01.tolist(),
            q99=q99.tolist(),
            q10=self.sketch.quantile(0.10).tolist(),
            q50=self.sketch.quantile(0.50).tolist(),
            q90=self.sketch.quantile(0.90).tolist(),
        )


class EpisodeStats:
    """Accumulates state and action statistics over episodes; merge results of many workers."""

    def __init__(self, state_dims: int | None = None, action_dims: int | None = None) -> None:
        self.state = RunningStats(state_dims) if state_dims is not None else None
        self.actions = RunningStats(action_dims) if action_dims is not None else None
        self.episodes = 0
        # (hash rank, episode id) of the episode the holdout hash ranks first: the one a build holds out
        # when none falls under the holdout fraction (few episodes), so a run always has a held-out split
        self.first_for_holdout: tuple[float, str] | None = None

    def rank_for_holdout(self, rank: float, episode_id: str) -> None:
        if self.first_for_holdout is None or (rank, episode_id) < self.first_for_holdout:
            self.first_for_holdout = (rank, episode_id)

    def add(self, state: np.ndarray, actions: np.ndarray) -> None:
        if self.state is None:
            self.state, self.actions = RunningStats(state.shape[1]), RunningStats(actions.shape[1])
        self.state.add(state)
        self.actions.add(actions)
        self.episodes += 1

    def add_episode(self, state: np.ndarray, actions: np.ndarray, *, delta_mask: Sequence[bool] | None = None,
                    horizon: int = 1, where: str = "") -> None:
        """One episode (state float32 [T, S], actions float32 [T, A]). With ``delta_mask`` the action
        statistics are those of the relative chunks the model learns (``kidata.delta``): every valid
        position of every step's chunk of ``horizon`` steps, minus that step's state on the masked
        dimensions, as openpi computes them after ``DeltaActions``. ``where`` names the source in
        the refusal of a mask that does not fit."""
        if delta_mask is None:
            self.add(state, actions)
            return
        mask = check_delta_mask(delta_mask, state_dim=state.shape[1], action_dim=actions.shape[1], where=where)
        chunks, valid = episode_delta_chunks(state, actions, horizon, mask)
        self.add(state, chunks[valid])

    def merge(self, other: "EpisodeStats") -> "EpisodeStats":
        if other.first_for_holdout is not None:
            self.rank_for_holdout(*other.first_for_holdout)
        if other.state is None:
            return self
        if self.state is None:
            self.state, self.actions = RunningStats(other.state.dims), RunningStats(other.actions.dims)
        self.state.merge(other.state)
        self.actions.merge(other.actions)
        self.episodes += other.episodes
        return self

    def finalize(self) -> NormStats:
        if self.state is None:
            raise ValueError("no episodes were added")
        return NormStats(self.state.finalize(), self.actions.finalize())


def merge_all(parts: Iterable[EpisodeStats]) -> EpisodeStats:
    total = EpisodeStats()
    for part in parts:
        total.merge(part)
    return total


# ---------------------------------------------------------------------------- a source's pass
def _unit_stats(source, unit, delta_mask=None, horizon: int = 1) -> tuple[EpisodeStats, Any]:  # (stats, ReadReport)
    from kidata.sources.base import ReadReport

    report = ReadReport()
    stats = EpisodeStats()
    for episode in source.read(unit, images=False, report=report):
        stats.add_episode(episode.state, episode.actions, delta_mask=delta_mask, horizon=horizon,
                          where=f"source {source.name!r}")
    return stats, report


def failed_units(failures: Sequence[tuple[str, str]]) -> str:
    """Failed units, each distinct error once with the units it stopped ("a:0, a:1: Error: ...")."""
    grouped: dict[str, list[str]] = {}
    for name, error in failures:
        grouped.setdefault(error, []).append(name)
    return "; ".join(f"{', '.join(names)}: {error}" for error, names in grouped.items())


def source_stats(source, *, workers: int = 1, progress: bool = True, delta_mask: Sequence[bool] | None = None,
                 horizon: int = 1):
    """Statistics of a robot source from a pass that decodes no image: (EpisodeStats, ReadReport).
    With ``delta_mask``, the actions' are those of relative chunks of ``horizon`` steps
    (``EpisodeStats.add_episode``).

    Units run on the local engine (a process pool when ``workers`` > 1); the result does not
    depend on the number of units or workers (per-episode moment parts, exact sketch counts)."""
    from kidata.pipelines.engine import run_jobs
    from kidata.sources.base import ReadReport

    units = source.list_units(max(1, workers) * 4)
    jobs = [((source, unit, delta_mask, horizon), unit.key) for unit in units]
    results, failures = run_jobs(_unit_stats, jobs, workers=workers, progress=progress, label=f"stats {source.name}")
    if failures:
        raise RuntimeError("statistics units failed: " + failed_units(failures))
    total, report = EpisodeStats(), ReadReport()
    for stats, part in results:
        total.merge(stats), report.merge(part)
    return total, report


def format_table(stats: NormStats) -> str:
    """A fixed-width table of both keys with the suspicious dimensions flagged."""
    lines = []
    for key, values in (("state", stats.state), ("actions", stats.actions)):
        flags = values.suspicious()
        lines.append(f"{key} ({values.count} steps, {len(values.mean)} dims)")
        lines.append(f"  {'dim':>3} {'mean':>10} {'std':>10} {'min':>10} {'q01':>10} {'q99':>10} {'max':>10}")
        for dim in range(len(values.mean)):
            row = [values.mean[dim], values.std[dim], values.min[dim], values.q01[dim], values.q99[dim], values.max[dim]]
            flag = f"  <- {flags[dim]}" if dim in flags else ""
            lines.append(f"  {dim:>3} " + " ".join(f"{v:>10.4g}" for v in row) + flag)
    return "\n".join(lines)
