"""MFU's numerator counted per part: image tokens through SigLIP, prefix and text through the
decoder, the LM head only at loss-masked targets, actions through the expert; and the benchmark's
pi0 step without FAST tokens or an LM head."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.flops import StepShape, naive_training_flops, training_flops  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.model.weights import parameter_counts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(image_size=32, patch_size=8, vision_width=24, vision_depth=1, vision_heads=2, vision_mlp=48,
            vocab_size=300, width=64, depth=3, heads=4, kv_heads=1, head_dim=16, mlp=128, expert_width=32,
            expert_mlp=64, action_dim=4, action_horizon=4, state_dim=4)


def model_bench():
    spec = importlib.util.spec_from_file_location("model_bench", ROOT / "benchmarks" / "model_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_part_is_charged_for_the_tokens_that_pass_through_it():
    config = ModelConfig(**TINY)
    counts = parameter_counts(config)
    flops = training_flops(config, StepShape(batch=2, cameras=3, text=10, loss_tokens=4))
    images, prefix = 2 * 3 * 16, 3 * 16 + 10  # 16 patches per image; backbone tokens per row
    assert flops["vision"] == 6 * (counts["vision"] + counts["projector"]) * images
    assert flops["backbone"] == 6 * counts["decoder"] * 2 * prefix
    assert flops["lm_head"] == 6 * 64 * 300 * 2 * 4
    assert flops["expert"] == 6 * counts["expert"] * 2 * 4
    score_and_sum = 2 * 2 * 64  # q k^T and weights @ v, per query-key pair, 4 heads x 16
    assert flops["attention"] == 3 * (2 * 2 * 24 * 16 * 16 * 2 * 3 * 1 + score_and_sum * prefix * prefix * 2 * 3
                                      + score_and_sum * 4 * (prefix + 4) * 2 * 3)
    assert flops["total"] == sum(value for name, value in flops.items() if name != "total")


def test_charging_every_token_with_every_parameter_overstates_the_2b_step_by_1_44x():
    config = ModelConfig.load("ki_2b")
    shape = StepShape(batch=8, cameras=2, text=200, loss_tokens=152)
    assert round(naive_training_flops(config, shape) / training_flops(config, shape)["total"], 2) == 1.44


def test_the_benchmarks_pi0_step_has_no_fast_tokens_and_no_lm_head(monkeypatch):
    bench = model_bench()
    batch = bench.make_batch(ModelConfig(**TINY), 2, 12, 5, torch.device("cpu"))
    pi0, ki = ModelConfig(**TINY, variant="pi0"), ModelConfig(**TINY, variant="ki")
    prompt = bench.variant_batch(batch, pi0, 5)
    assert prompt["tokens"].shape == (2, 5) and not prompt["loss"].any() and not prompt["ar"].any()
    assert bench.variant_batch(batch, ki, 5) is batch
    assert training_flops(pi0, bench.step_shape(prompt))["lm_head"] == 0
    assert training_flops(ki, bench.step_shape(batch))["lm_head"] == 6 * 64 * 300 * 2 * 7  # tokens 5-11 are targets
    net, rows = KIModel(pi0), []
    head = net.lm_head
    monkeypatch.setattr(net, "lm_head", lambda hidden: rows.append(hidden.shape[0]) or head(hidden))
    net(prompt)
    assert rows == [0]
