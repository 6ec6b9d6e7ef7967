"""Subtask rows (pi0.5): the action expert conditions on the subtask text in training, and the
policy generates that text before it acts, so the expert sees the same context in both."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kidata.eval.parity import compare  # noqa: E402
from kidata.loader.collate import collate, expert_prompt  # noqa: E402
from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.pipelines.shards import sample_members  # noqa: E402
from kidata.tokenizers.prompt import SampleEncoder  # noqa: E402

TINY = dict(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
            vocab_size=2048, width=64, depth=2, heads=4, kv_heads=1, head_dim=16, mlp=128, expert_width=32,
            expert_mlp=64, action_dim=4, action_horizon=4, state_dim=4)
STATE = np.array([0.2, -0.4, 0.05, 0.9], np.float32)  # away from the 256 bins' edges
CHUNK = np.tile(np.linspace(-0.5, 0.5, 4, dtype=np.float32)[:, None], (1, 4))
IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def encoder():
    from kidata.sources.synthetic import action_chunks
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.text import TextTokenizer

    text = TextTokenizer.load("tokenizers/demo-text")
    return SampleEncoder(text, FastTokenizer.fit(action_chunks(500, 4, 4, seed=1), vocab_size=256))


def batch_of(samples) -> dict:
    """Samples as the build writes them (meta.json) and the loader collates them."""
    records = []
    for sample in samples:
        meta = json.loads(sample_members(sample, {})["meta.json"])
        records.append({"tokens": sample.tokens, "ar": sample.ar, "loss": sample.loss, "images": {"base_0": IMAGE},
                        "state": sample.state, "actions": sample.actions, "action_valid": sample.action_valid,
                        "meta": meta, "source_index": 0})
    return collate(records, max_tokens=max(len(s.tokens) for s in samples), action_dim=4, action_horizon=4,
                   state_dim=4, cameras=["base_0"], image_size=32)


def tiny_model(cls=KIModel) -> KIModel:
    """A tiny model with every weight drawn (the adaptive norms' gates start at zero, which would
    cut the expert off from the backbone)."""
    torch.manual_seed(0)
    model = cls(ModelConfig(**TINY)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def training_row(encoder, subtask: str):
    return encoder.robot("clean the table", STATE, CHUNK, np.ones(4, bool), subtask=subtask)


def test_a_subtask_rows_expert_context_is_its_prompt_and_subtask_text_never_its_action_tokens(encoder):
    sample = training_row(encoder, "reach the cup")
    batch = batch_of([sample])
    subtask_part = encoder.text.encode("Subtask: reach the cup;\nAction: ")
    assert int(batch["expert_context"][0]) == sample.prefix_length + len(subtask_part) == sample.fast_span[0]
    plain = batch_of([encoder.robot("clean the table", STATE, CHUNK, np.ones(4, bool))])
    assert int(plain["expert_context"][0]) == int(plain["prefix_length"][0])  # pi0.5 rows: the prefix


def test_the_expert_is_trained_on_the_subtask_text(encoder):
    model = tiny_model()
    batch = batch_of([training_row(encoder, "reach the cup"), training_row(encoder, "open the drawer")])
    noise, t = torch.randn(1, 4, 4).expand(2, -1, -1), torch.full((2,), 0.6)
    with torch.no_grad():
        velocity = model(batch, noise=noise, t=t)["velocity"]
    assert not torch.allclose(velocity[0], velocity[1], atol=1e-4)  # same prompt, another subtask


def test_a_subtask_rows_training_context_equals_the_policys_prompt_after_the_subtask(encoder):
    model = tiny_model()
    training = batch_of([training_row(encoder, "reach the cup")])
    inference = batch_of([encoder.subtask_prompt("clean the table", STATE, subtask="reach the cup",
                                                 images={"base_0": IMAGE})])
    assert all(result["ok"] for result in compare(expert_prompt(training), inference).values())
    noise, t = torch.randn(1, 4, 4), torch.full((1,), 0.3)
    with torch.no_grad():
        trained = model(training, noise=noise, t=t)["velocity"]
        _, cache, valid, ar, _ = model.run_backbone(inference)
        acting = model.run_expert(t * noise + (1 - t) * training["actions"], t, inference, cache, valid, ar)
    torch.testing.assert_close(acting, trained, atol=1e-5, rtol=1e-5)


def test_the_old_inference_prompt_differs_from_a_subtask_rows_context_and_parity_names_it(encoder):
    training = batch_of([training_row(encoder, "reach the cup")])
    plain = batch_of([encoder.robot_prompt("clean the table", STATE, images={"base_0": IMAGE})])
    report = compare(expert_prompt(training), plain)
    assert not report["tokens"]["ok"] and not report["expert_context"]["ok"] and report["images"]["ok"]


def subtask_policy(encoder, model, *, annotated: bool = True):
    from kidata.policy import Policy
    from kidata.recipe import MixtureConfig, Recipe, SourceConfig
    from kidata.training.config import PolicyConfig

    stats = {"count": 1, "mean": [0.0] * 4, "std": [1.0] * 4, "min": [-1.0] * 4, "max": [1.0] * 4,
             "q01": [-1.0] * 4, "q99": [1.0] * 4}
    source = SourceConfig("kitchen", "rlds", options={"annotations": "subtasks.jsonl"} if annotated else {})
    manifest = SimpleNamespace(
        recipe=Recipe(MixtureConfig("kitchen"), (source,), "."),
        encoding=SimpleNamespace(action_horizon=4, action_dim=4, normalization="quantile", max_tokens=64),
        sources=[SimpleNamespace(name="kitchen", kind="robot", norm_stats={"state": stats, "actions": stats},
                                 delta_mask=None)])
    config = SimpleNamespace(data=SimpleNamespace(cameras=["base_0"]), model=model.config, policy=PolicyConfig())
    return Policy(model, config, manifest, encoder)


def test_a_policy_of_an_annotated_source_generates_the_subtask_then_acts_on_it(encoder):
    training = training_row(encoder, "reach the cup")

    class Oracle(KIModel):  # continues any prompt with the training row's own tokens
        def generate(self, prompt, max_new_tokens, *, stop_ids=(), **_):
            length = int(prompt["token_mask"][0].sum())
            rest = list(training.tokens[length:]) + [0] * max_new_tokens
            return torch.tensor([rest[:max_new_tokens]])

    model = tiny_model(Oracle)
    policy = subtask_policy(encoder, model)
    assert policy.generates_subtask and not subtask_policy(encoder, model, annotated=False).generates_subtask
    noise = torch.randn(1, 4, 4)
    observation = {"images": {"base_0": IMAGE}, "state": STATE, "prompt": "clean the table"}
    acted = policy.sample_actions(observation, noise=noise)
    assert policy.last_subtask == "reach the cup"
    expected = model.sample_actions(expert_prompt(batch_of([training])), noise=noise)[0].numpy()
    np.testing.assert_allclose(acted, (expected + 1) / 2 * (2 + 1e-6) - 1, atol=1e-5)
