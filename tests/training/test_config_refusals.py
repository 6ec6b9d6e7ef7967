"""A training config refuses, when it loads, every setting that would otherwise stop the run only at
its first evaluation (after its training steps) or deep in the loader, naming the key."""

from __future__ import annotations

import re

import pytest

from kidata.training.config import load


@pytest.mark.parametrize("table, refusal", [
    ({"tasks": 3}, r"eval.metaworld.tasks must be task names such as \[\"reach\"\], or MT10 / MT50, got 3"),
    ({"tasks": []}, r"eval.metaworld.tasks must be task names .*, got \(\)"),
    ({"tasks": ["reach"], "episodes": 0}, r"eval.metaworld.episodes must be >= 1 \(episodes per task\), got 0"),
    ({"tasks": ["reach"], "max_steps": 0}, r"eval.metaworld.max_steps must be >= 1 \(the step budget of an episode\)"),
    ({"tasks": "MT10", "replan": 0}, r"eval.metaworld.replan must be >= 1 \(actions executed per predicted chunk\)"),
])
def test_closed_loop_settings_the_evaluator_would_refuse_are_refused_when_the_config_loads(table, refusal):
    with pytest.raises(ValueError, match=f"^{refusal}"):
        load("ki_tiny", {"eval": {"metaworld": table}})


@pytest.mark.parametrize("key", ["batches", "batch_size", "num_steps", "max_new_tokens"])
def test_a_held_out_evaluation_setting_below_one_is_refused_when_the_config_loads(key):
    with pytest.raises(ValueError, match=rf"^eval.{key} must be a whole number >= 1 \(.*\), got 0$"):
        load("ki_tiny", {"eval": {key: 0}})


@pytest.mark.parametrize("overrides, refusal", [
    ({"schedule": {"decay_steps": -5}}, r"schedule.decay_steps must be >= 0, got -5"),
    ({"schedule": {"warmup_steps": -1}}, r"schedule.warmup_steps must be >= 0, got -1"),
    ({"optim": {"betas": [0.9]}}, r"optim.betas must be two numbers in \[0, 1\) \(AdamW's, e.g. \[0.9, 0.95\]\), got \(0.9,\)"),
    ({"data": {"num_workers": -1}}, r"data.num_workers must be >= 0 \(0: loading in the training process\), got -1"),
    ({"data": {"shuffle_buffer": 0}}, r"data.shuffle_buffer must be >= 1 \(samples shuffled together\), got 0"),
    ({"data": {"weights": 3}}, r"overrides: data.weights = 3: expected a table, got int"),
    ({"data": {"weights": {"bridge": "x"}}}, r"data.weights must map source names to numbers, got \{'bridge': 'x'\}"),
])
def test_a_schedule_optimizer_or_data_setting_out_of_range_is_refused_naming_its_key(overrides, refusal):
    with pytest.raises(ValueError, match=f"^{refusal}$"):
        load("ki_tiny", overrides)


def test_settings_in_range_still_load_as_given():
    config = load("ki_tiny", {"eval": {"batches": 1, "metaworld": {"tasks": "MT10", "replan": 1, "max_steps": 1}},
                              "schedule": {"warmup_steps": 0}, "optim": {"betas": [0, 0.5]},
                              "data": {"weights": {"bridge": 1}, "shuffle_buffer": 1}})
    assert (config.eval.metaworld.replan, config.optim.betas, dict(config.data.weights)) == (1, (0, 0.5), {"bridge": 1})


def test_overrides_given_as_one_string_are_refused_saying_what_to_pass_instead():
    with pytest.raises(ValueError, match=r"^overrides '--train.steps 3': a string; pass a table such as "
                                         r"\{'train': \{'steps': 3\}\}, or the command line's arguments as a list "
                                         r"\['--train.steps', '3'\]$"):
        load("ki_tiny", "--train.steps 3")
    assert load("ki_tiny", ["--train.steps", "3"]).train.steps == load("ki_tiny", {"train": {"steps": 3}}).train.steps


@pytest.mark.parametrize("cameras", [["nope"], ["base_0", "base_0"], [1, 2]])
def test_cameras_that_are_not_distinct_standard_names_are_refused_rather_than_trained_on_no_image(cameras):
    with pytest.raises(ValueError, match=r"^data.cameras must be distinct standard camera names \['base_0', 'base_1', "
                                         rf"'left_wrist_0', 'right_wrist_0'\], got {re.escape(str(cameras))}$"):
        load("ki_tiny", {"data": {"cameras": cameras}})
