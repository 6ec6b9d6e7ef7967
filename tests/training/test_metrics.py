"""The training log's rates (kidata.training.metrics)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from kidata.training.config import load
from kidata.training.metrics import MetricsLogger
from kidata.training.run_dir import RunDir


def test_tokens_per_s_over_samples_per_s_is_the_tokens_per_sample_however_uneven_the_steps_are(tmp_path):
    config = load("ki_tiny", {"train": {"steps": 20}, "log": {"every": 10, "progress": False, "tensorboard": False,
                                                             "wandb": False}})
    logger = MetricsLogger(RunDir(tmp_path), config, SimpleNamespace(source_names=["bridge"]), enabled=True, start=0)
    tokens_per_sample, batch = 40, 16
    for step in range(1, 21):
        logger.tick(seconds=5.0 if step <= 3 else 0.01, samples=batch)  # a slow start, then fast steps
        if step % 5 == 0:  # device metrics read every 5 steps, bringing those steps' tokens
            logger.step(step, {"loss": 1.0}, mix=np.array([5 * batch]), tokens=5 * batch * tokens_per_sample)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [10, 20]
    for record in records:
        assert record["tokens_per_s"] / record["samples_per_s"] == pytest.approx(tokens_per_sample, rel=1e-3)  # 3 decimals
