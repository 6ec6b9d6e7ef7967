"""The memory model: per-GPU bytes of each setting, computed by hand."""

from __future__ import annotations

import pytest

from kidata.training.memory import estimate


def test_the_current_trainer_shards_adam_but_keeps_a_full_ema_and_gathers_the_whole_model():
    e = estimate(1000, 800, 100, 4, "current")
    assert (e.weights, e.gradients, e.adam, e.ema, e.gathered) == (1000, 800, 1600, 3200, 4000)
    assert e.total == 10600


def test_per_block_units_shard_the_ema_and_gather_two_bf16_blocks():
    e = estimate(1000, 800, 100, 4, "per_block")
    assert (e.weights, e.gradients, e.adam, e.ema, e.gathered) == (1000, 800, 1600, 800, 400)


def test_one_gpu_gathers_nothing():
    assert estimate(1000, 800, 100, 1, "current").gathered == estimate(1000, 800, 100, 1, "per_block").gathered == 0


def test_an_unknown_setting_is_named():
    with pytest.raises(ValueError, match="memory setting 'zero3': choose one of"):
        estimate(1, 1, 1, 1, "zero3")


def test_the_2b_preset_sizes_count_every_parameter():
    pytest.importorskip("torch")
    from kidata.model.config import ModelConfig
    from kidata.model.weights import parameter_counts
    from kidata.training.memory import preset_sizes

    config = ModelConfig.load("ki_2b")
    total, trainable, block = preset_sizes(config)
    assert total == parameter_counts(config)["total"] == trainable
    assert block == 257152 * 2048  # the embedding is the largest unit
