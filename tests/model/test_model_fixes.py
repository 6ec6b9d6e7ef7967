"""Correctness at the 2B preset's edges: the embedding's size, new modules over a pretrained
backbone, FAST metrics for every prompt layout, fully padded rows, openpi's state bins, H = 50."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.tokenizers.state import discretize_state, state_text  # noqa: E402

TINY = dict(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
            vocab_size=300, width=64, depth=2, heads=4, kv_heads=1, head_dim=16, mlp=128, expert_width=32,
            expert_mlp=64, action_dim=4, action_horizon=4, state_dim=4)


# ------------------------------------------------------------------------- 1. the hub's vocabulary
def test_a_checkpoint_with_fewer_embedding_rows_than_the_model_is_refused(tmp_path):
    from support.model import tiny_paligemma

    from kidata.model.weights import WeightsError, config_from_paligemma, load_paligemma

    tiny_paligemma(tmp_path)
    model = KIModel(config_from_paligemma(tmp_path, vocab_size=4096, action_dim=8, action_horizon=4,
                                          expert_width=32, expert_mlp=64, state_dim=8))
    with pytest.raises(WeightsError, match=r"embed_tokens.* has 2048 rows, the model's vocab_size is 4096"):
        load_paligemma(model, tmp_path)


def test_the_2b_preset_keeps_openpis_vocabulary_and_the_papers_horizon():
    from kidata.training.config import TrainConfig

    config = TrainConfig.load("model/ki_2b.toml")
    assert config.model.vocab_size == 257152  # PaliGemma's tokenizer; FAST ids = 257152 - 1 - 128 - token
    assert config.model.action_horizon == 50  # the paper, appendix B


# ------------------------------------------------------------------------- 2. new modules are new
def test_a_prefix_state_projection_is_initialized_not_demanded_from_paligemma(tmp_path):
    from support.model import tiny_paligemma

    from kidata.model.weights import config_from_paligemma, load_paligemma

    tiny_paligemma(tmp_path)
    model = KIModel(config_from_paligemma(tmp_path, state_input="prefix", action_dim=8, action_horizon=4,
                                          expert_width=32, expert_mlp=64, state_dim=8))
    fresh = model.state_proj.weight.detach().clone()
    report = load_paligemma(model, tmp_path)
    assert "state_proj.weight" in report["fresh"] and "state_proj.bias" in report["fresh"]
    torch.testing.assert_close(model.state_proj.weight, fresh, atol=0, rtol=0)


def test_the_frozen_variant_trains_a_prefix_state_projection():
    model = KIModel(ModelConfig(**TINY, variant="frozen", state_input="prefix"))
    assert all(p.requires_grad for p in model.state_proj.parameters())
    assert not any(p.requires_grad for p in model.backbone_parameters())


# ----------------------------------------------------------- 3. FAST metrics for every layout
@pytest.fixture(scope="module")
def text_and_fast():
    from kidata.sources.synthetic import action_chunks
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.text import TextTokenizer

    return TextTokenizer.load("tokenizers/demo-text"), FastTokenizer.fit(action_chunks(500, 4, 4, seed=1), vocab_size=256)


def collated(samples, config):
    from kidata.loader.collate import collate

    records = [{"tokens": s.tokens, "ar": s.ar, "loss": s.loss, "images": {}, "state": s.state,
                "actions": s.actions, "action_valid": s.action_valid,
                "meta": {"prefix_length": s.prefix_length}, "source_index": 0} for s in samples]
    return collate(records, max_tokens=max(len(s.tokens) for s in samples) + 3, action_dim=config.action_dim,
                   action_horizon=config.action_horizon, state_dim=config.state_dim, cameras=["base_0"],
                   image_size=config.image_size)


@pytest.mark.parametrize("layout", ["pi0fast", "subtask", "pi05"])
def test_the_evaluator_generates_fast_tokens_from_where_the_policy_does(text_and_fast, layout):
    from kidata.loader.collate import generation_prompt
    from kidata.tokenizers.prompt import SampleEncoder

    text, fast = text_and_fast
    encoder = SampleEncoder(text, fast, prompt_format="pi0fast" if layout == "pi0fast" else "pi05")
    state, chunk = np.full(4, 0.2, np.float32), np.zeros((4, 4), np.float32)
    sample = encoder.robot("pick the cup", state, chunk, np.ones(4, bool),
                           subtask="reach the cup" if layout == "subtask" else None)
    batch = collated([sample], ModelConfig(**TINY))
    prompt = generation_prompt(batch, encoder.id_map.range)
    kept = prompt["token_mask"][0]
    start = sample.fast_span[0]
    assert kept.sum() == start  # everything before the first FAST token, "Action: " included
    assert prompt["tokens"][0, :start].tolist() == sample.tokens[:start].tolist()
    assert prompt["ar"][0, :start].tolist() == sample.ar[:start].tolist()
    if layout == "subtask":  # the policy generates the subtask first, then acts from the same stream
        policy = encoder.subtask_prompt("pick the cup", state, subtask="reach the cup")
    else:
        policy = encoder.robot_prompt("pick the cup", state)
    assert policy.tokens.tolist() == sample.tokens[:start].tolist()
    assert policy.ar.tolist() == sample.ar[:start].tolist()


def test_fast_metrics_read_the_generated_chunk_in_the_pi0fast_layout(text_and_fast):
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.training.held_out import HeldOutMetrics

    text, fast = text_and_fast
    encoder = SampleEncoder(text, fast, prompt_format="pi0fast")
    chunk = np.tile(np.linspace(-0.5, 0.5, 4, dtype=np.float32)[:, None], (1, 4))
    sample = encoder.robot("pick the cup", np.zeros(4, np.float32), chunk, np.ones(4, bool))
    config = ModelConfig(**TINY, variant="pi0_fast")
    batch = collated([sample], config)

    class Oracle(KIModel):  # answers with the sample's own continuation after the prompt it is given
        def generate(self, prompt, max_new_tokens, *, stop_ids=(), **_):
            length = int(prompt["token_mask"][0].sum())
            rest = list(sample.tokens[length:]) + [0] * max_new_tokens
            return torch.tensor([rest[:max_new_tokens]])

    stats = {"count": 1, "mean": [0.0] * 4, "std": [1.0] * 4, "min": [-1.0] * 4, "max": [1.0] * 4,
             "q01": [-1.0] * 4, "q99": [1.0] * 4}  # q01 / q99 at -1 / 1: unnormalizing is the identity
    manifest = SimpleNamespace(encoding=SimpleNamespace(action_horizon=4, action_dim=4, normalization="quantile"),
                               sources=[SimpleNamespace(kind="robot", norm_stats={"state": stats, "actions": stats})])
    metrics = HeldOutMetrics(manifest, encoder)
    metrics.update(Oracle(config), batch)
    result = metrics.result()
    assert result["fast_decode_rate"] == 1.0
    roundtrip, _ = fast.decode(fast.encode(chunk[None]), horizon=4, dim=4)
    assert result["fast_action_mse"] == pytest.approx(float(((roundtrip[0] - chunk) ** 2).mean()), rel=1e-5)


# ---------------------------------------------------------------- 4. fully padded rows
def reference_attention(q, k, v, attn_mask=None, **_):
    """softmax(q k^T / sqrt(d) + mask) v as torch < 2.5 computed it: a boolean mask becomes -inf,
    so a row with nothing to attend to is NaN."""
    bias = attn_mask
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype).masked_fill(~attn_mask, float("-inf"))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(scores + (0 if bias is None else bias), dim=-1) @ v


def test_a_fully_padded_row_stays_finite_under_an_attention_kernel_without_the_zero_rule(monkeypatch):
    import kidata.model.ki_model as ki_model

    torch.manual_seed(0)
    model = KIModel(ModelConfig(**TINY)).eval()
    batch = {"images": torch.rand(2, 1, 3, 32, 32) * 2 - 1, "image_mask": torch.tensor([[True], [False]]),
             "tokens": torch.randint(3, 290, (2, 6)), "ar": torch.zeros(2, 6, dtype=torch.bool),
             "token_mask": torch.tensor([[True] * 6, [False] * 6]), "loss": torch.zeros(2, 6, dtype=torch.bool),
             "state": torch.zeros(2, 4), "state_dim_mask": torch.ones(2, 4, dtype=torch.bool)}
    with torch.no_grad():
        expected = model.run_backbone(batch)[0][0]
        monkeypatch.setattr(ki_model.F, "scaled_dot_product_attention", reference_attention)
        hidden = model.run_backbone(batch)[0]
    assert torch.isfinite(hidden).all()  # the padded row included
    torch.testing.assert_close(hidden[0], expected, atol=1e-5, rtol=1e-5)


def test_the_torch_floor_has_public_fully_shard():
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in ("model", "loader"):
        floors = [d for d in extras[extra] if d.startswith("torch")]
        assert floors == ["torch>=2.6"], extra


# ---------------------------------------------------------------- openpi's state bins
def openpi_bins(state: np.ndarray) -> np.ndarray:
    """openpi (pi0.5 prompt): np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1."""
    return np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1


def test_state_text_equals_openpis_bins_out_of_range_included():
    state = np.array([-1.5, -1.0, -0.3, 0.0, 0.99, 1.0, 1.7])
    text, clipped = state_text(state)
    assert text == " ".join(map(str, openpi_bins(state)))
    assert text.startswith("-1 0 ") and clipped == 2


def test_special_state_tokens_clip_below_range_to_bin_zero_and_count_it():
    indices, clipped = discretize_state(np.array([-1.5, 0.0]))
    assert indices.tolist() == [0, 128] and clipped == 1
