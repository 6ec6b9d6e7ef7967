"""How predicted chunks become executed actions: the action queue and ACT's temporal ensembling."""

import math

import numpy as np
import pytest

from kidata.eval.chunking import ChunkExecutor, Chunking


def _run(executor: ChunkExecutor, chunk_at, steps: int) -> tuple[list[int], np.ndarray]:
    """Drives an executor as the evaluator does; ``chunk_at(step)`` is the policy."""
    queried, executed = [], []
    for step in range(steps):
        if executor.needs_chunk(step):
            queried.append(step)
            executor.add(step, chunk_at(step))
        executed.append(executor.action(step))
    return queried, np.stack(executed)


def _numbered(step: int, horizon: int = 4) -> np.ndarray:
    """A [horizon, 2] chunk whose values say when it was asked for and which of its actions each is."""
    return np.array([[100 * step + index, -(100 * step + index)] for index in range(horizon)], dtype=np.float64)


def test_without_an_ensemble_each_chunks_first_replan_actions_run_in_order():
    queried, executed = _run(ChunkExecutor(replan=3), _numbered, steps=7)
    assert queried == [0, 3, 6]
    assert executed[:, 0].tolist() == [0, 1, 2, 300, 301, 302, 600]


def test_a_chunk_shorter_than_the_replanning_interval_is_run_whole_before_the_next_query():
    queried, executed = _run(ChunkExecutor(replan=5), lambda step: _numbered(step, horizon=2), steps=5)
    assert queried == [0, 2, 4]
    assert executed[:, 0].tolist() == [0, 1, 200, 201, 400]


def test_the_temporal_ensemble_weighs_every_covering_chunk_by_exp_minus_decay_from_the_oldest():
    # replan 1, horizon 3: at step 2 the chunks asked at steps 0, 1 and 2 all cover it, with their
    # actions 2, 1 and 0 (values 2, 101, 200); decay ln 2 weighs them 1, 1/2, 1/4.
    executor = ChunkExecutor(replan=1, ensemble=math.log(2.0))
    _, executed = _run(executor, lambda step: _numbered(step, horizon=3), steps=4)
    assert executed[0, 0] == 0.0
    assert executed[1, 0] == pytest.approx((1 * 1 + 0.5 * 100) / 1.5)
    assert executed[2, 0] == pytest.approx((1 * 2 + 0.5 * 101 + 0.25 * 200) / 1.75)
    assert executed[2, 1] == pytest.approx(-executed[2, 0])
    # step 3: the step-0 chunk has ended; the chunks of steps 1, 2 and 3 vote
    assert executed[3, 0] == pytest.approx((1 * 102 + 0.5 * 201 + 0.25 * 300) / 1.75)


def test_a_zero_decay_ensemble_is_the_plain_mean_and_replanning_sets_how_many_chunks_vote():
    _, executed = _run(ChunkExecutor(replan=2, ensemble=0.0), _numbered, steps=5)
    # horizon 4, a chunk every 2 steps: steps 2-3 are covered by the chunks of steps 0 and 2
    assert executed[:, 0].tolist() == [0, 1, (2 + 200) / 2, (3 + 201) / 2, (202 + 400) / 2]


@pytest.mark.parametrize("decay", [float("nan"), float("inf"), True, "0.01"])
def test_an_ensemble_decay_that_is_not_a_finite_number_is_refused_in_one_sentence(decay):
    with pytest.raises(ValueError, match=r"temporal ensemble decay must be a finite number \(ACT uses 0.01\), got"):
        ChunkExecutor(replan=1, ensemble=decay)


def test_a_replanning_interval_below_one_and_a_malformed_chunk_are_refused():
    with pytest.raises(ValueError, match=r"replan must be >= 1 \(actions executed per predicted chunk\), got 0"):
        ChunkExecutor(replan=0)
    with pytest.raises(ValueError, match=r"a predicted chunk must be \[horizon >= 1, action_dim\], got shape \(4,\)"):
        ChunkExecutor(replan=1).add(0, np.zeros(4))


def test_a_policy_carrying_run_settings_is_executed_as_they_say_and_any_other_with_a_runs_defaults():
    from kidata.training.config import PolicyConfig

    class Settled:
        settings = PolicyConfig(replan=3, temporal_ensemble=0.01)

    assert Chunking.of(Settled()) == Chunking(replan=3, ensemble=0.01)
    assert Chunking.of(object()) == Chunking(replan=PolicyConfig.replan, ensemble=None)
