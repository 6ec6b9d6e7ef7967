"""Normalization statistics: mergeable, order-independent, with a stated quantile error bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kidata.normalize import DimStats, NormStats, normalize, unnormalize
from kidata.pipelines.stats import EpisodeStats, QuantileSketch, merge_all


@pytest.fixture(scope="module")
def episodes():
    rng = np.random.default_rng(0)
    return [(rng.normal(0, 1, (int(rng.integers(20, 200)), 3)).astype(np.float32),
             (rng.normal(0, 1, (1, 2)) * [1, 100] + rng.normal(0, 0.5, (100, 2))).astype(np.float32))
            for _ in range(300)]


def stats_of(parts):
    result = []
    for part in parts:
        accumulator = EpisodeStats()
        for state, actions in part:
            accumulator.add(state, actions)
        result.append(accumulator)
    return result


def test_two_workers_in_any_merge_order_equal_one_worker(episodes):
    whole = stats_of([episodes])[0].finalize()
    first, second = stats_of([episodes[::2], episodes[1::2]])
    assert merge_all([first, second]).finalize() == whole
    first, second = stats_of([episodes[::2], episodes[1::2]])
    assert merge_all([second, first]).finalize() == whole


def test_any_three_way_split_and_order_gives_identical_statistics(episodes):
    whole = stats_of([episodes])[0].finalize()
    for order in itertools.permutations(range(3)):
        parts = stats_of([episodes[:50], episodes[50:220], episodes[220:]])
        assert merge_all(parts[i] for i in order).finalize() == whole


def test_quantiles_are_within_the_relative_error_bound_of_exact_ranks():
    values = np.random.default_rng(1).normal(0, 1, (200_000, 1))
    sketch = QuantileSketch(1, relative_accuracy=1e-3)
    sketch.add(values)
    ordered = np.sort(values[:, 0])
    for q in (0.01, 0.5, 0.99):
        exact = ordered[int(np.floor(q * (len(ordered) - 1)))]
        assert abs(sketch.quantile(q)[0] - exact) <= 1e-3 * abs(exact) + 1e-12


def test_moments_and_extremes(episodes):
    stats = stats_of([episodes])[0].finalize()
    actions = np.concatenate([a for _, a in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats.actions.mean, actions.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.actions.std, actions.std(axis=0), rtol=1e-9)
    assert stats.actions.min == actions.min(axis=0).tolist()
    assert stats.actions.count == len(actions)


def test_sketch_round_trips_through_json():
    sketch = QuantileSketch(2)
    sketch.add(np.random.default_rng(2).normal(size=(1000, 2)))
    again = QuantileSketch.from_json(sketch.to_json())
    np.testing.assert_array_equal(again.quantile(0.3), sketch.quantile(0.3))


def dim_stats(**values) -> DimStats:
    base = dict(count=10, mean=[0.0, 5.0], std=[1.0, 0.0], min=[-3.0, 5.0], max=[3.0, 5.0], q01=[-2.0, 5.0], q99=[2.0, 5.0])
    base.update(values)
    return DimStats(**base)


def test_quantile_normalization_is_openpis_formula_and_round_trips():
    stats = dim_stats()
    values = np.array([[-2.0, 5.0], [2.0, 5.0], [0.5, 7.0]])
    normalized = normalize(values, stats, "quantile")
    np.testing.assert_array_equal(normalized[:, 0], (values[:, 0] + 2.0) / (4.0 + 1e-6) * 2.0 - 1.0)
    np.testing.assert_allclose(unnormalize(normalized, stats, "quantile"), values, rtol=0, atol=1e-12)


def test_mean_std_normalization_is_openpis_formula_and_round_trips():
    stats = dim_stats()
    values = np.array([[-2.0, 5.0], [2.0, 5.0], [0.5, 7.0]])
    normalized = normalize(values, stats, "mean_std")
    np.testing.assert_array_equal(normalized[:, 0], values[:, 0] / (1.0 + 1e-6))
    np.testing.assert_allclose(unnormalize(normalized, stats, "mean_std"), values, rtol=0, atol=1e-12)


def constant_joint_stats() -> DimStats:
    """Statistics the build computes for a joint held at 3.1 beside a moving one (float32 data)."""
    rng = np.random.default_rng(0)
    accumulator = EpisodeStats()
    for _ in range(5):
        state = np.c_[rng.normal(0, 1, (50, 1)), np.full((50, 1), 3.1)].astype(np.float32)
        accumulator.add(state, state)
    return accumulator.finalize().state


@pytest.mark.parametrize(("mode", "expected"), [("quantile", -1.0), ("mean_std", 0.0)])
def test_a_constant_joint_at_3_1_is_normalized_into_range_and_restored_exactly(mode, expected):
    stats = constant_joint_stats()
    joint = np.float32(3.1)
    assert stats.q01[1] == stats.q99[1] == stats.mean[1] == joint and stats.std[1] == 0.0
    values = np.array([[0.3, joint], [-1.2, joint]], dtype=np.float32)
    normalized = normalize(values, stats, mode)
    assert normalized[:, 1].tolist() == [expected, expected]  # not the raw 3.1 beside [-1, 1] values
    assert unnormalize(normalized, stats, mode)[:, 1].tolist() == [float(joint)] * 2


def test_suspicious_dimensions_are_flagged():
    stats = dim_stats(max=[300.0, 5.0])
    flags = stats.suspicious()
    assert flags[0].startswith("extreme outliers") and flags[1].startswith("near-zero range")


def test_norm_stats_save_and_load(tmp_path, episodes):
    stats = stats_of([episodes[:10]])[0].finalize()
    stats.save(tmp_path / "stats.json")
    assert NormStats.load(tmp_path / "stats.json") == stats
