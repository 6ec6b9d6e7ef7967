"""Pretrained weights: a tiny random PaliGemma saved by transformers gives our backbone the same
logits; openpi's pi0 / pi0.5 key layouts load tensor for tensor."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.model import IMAGE_TOKEN, openpi_checkpoint, tiny_paligemma  # noqa: E402

from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.model.weights import WeightsError, config_from_paligemma, load_openpi, load_paligemma, translate  # noqa: E402


def test_backbone_logits_equal_transformers_paligemma(tmp_path):
    reference = tiny_paligemma(tmp_path)
    ours = KIModel(config_from_paligemma(tmp_path, action_dim=8, action_horizon=4, expert_width=32,
                                         expert_mlp=64, state_dim=8)).eval()
    report = load_paligemma(ours, tmp_path)
    assert report["loaded"] == sum(1 for _ in ours.backbone_parameters())

    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    text = torch.randint(3, 2000, (2, 9), generator=g)
    prefix = 5  # 5 prompt tokens (bidirectional with the image), then 4 causal target tokens
    patches = 16
    input_ids = torch.cat([torch.full((2, patches), IMAGE_TOKEN), text], dim=1)
    token_type_ids = torch.cat([torch.zeros(2, patches + prefix, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixels, token_type_ids=token_type_ids).logits[:, patches:]
    ar = torch.zeros(2, 9, dtype=torch.bool)
    ar[:, prefix:] = True
    batch = {"images": pixels[:, None], "image_mask": torch.ones(2, 1, dtype=torch.bool), "tokens": text, "ar": ar,
             "token_mask": torch.ones(2, 9, dtype=torch.bool)}
    with torch.no_grad():
        hidden, _, _, _, text_start = ours.run_backbone(batch)
        logits = hidden[:, text_start:] @ ours.embed.weight.T
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_a_pretrained_patch_embedding_into_a_convolutional_stem_is_refused_naming_the_setting(tmp_path):
    tiny_paligemma(tmp_path)
    ours = KIModel(config_from_paligemma(tmp_path, action_dim=8, action_horizon=4, expert_width=32,
                                         expert_mlp=64, state_dim=8, vision_stem=(4, 8)))
    with pytest.raises(WeightsError, match=r"patch embedding has no place in a model with vision_stem \[4, 8\]"):
        load_paligemma(ours, tmp_path)


def test_paligemma_config_is_read_into_the_model_config(tmp_path):
    tiny_paligemma(tmp_path)
    config = config_from_paligemma(tmp_path)
    assert (config.width, config.depth, config.heads, config.kv_heads, config.head_dim, config.mlp) == (64, 2, 4, 1, 16, 128)
    assert (config.vision_width, config.vision_depth, config.image_size, config.patch_size) == (32, 2, 32, 8)
    assert config.vocab_size == 2048


@pytest.mark.parametrize("pi05", [True, False], ids=["pi05", "pi0"])
def test_openpi_checkpoint_loads_every_tensor(tmp_path, pi05):
    style = {} if pi05 else {"time_conditioning": "concat", "state_input": "expert"}
    config = ModelConfig(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
                         vocab_size=300, width=64, depth=2, heads=4, kv_heads=1, head_dim=16, mlp=128,
                         expert_width=32, expert_mlp=64, action_dim=8, action_horizon=4, state_dim=8, **style)
    torch.manual_seed(1)
    reference = KIModel(config)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    openpi_checkpoint(tmp_path / "model.safetensors", reference, pi05)
    torch.manual_seed(2)
    ours = KIModel(config)
    report = load_openpi(ours, tmp_path)
    assert report == {"loaded": len(reference.state_dict()), "dropped": 1, "embedding_rows_sliced": 0, "fresh": []}
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name


def test_openpi_pi05_checkpoint_into_a_pi0_config_is_refused(tmp_path):
    config = ModelConfig(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
                         vocab_size=300, width=64, depth=1, heads=4, kv_heads=1, head_dim=16, mlp=128,
                         expert_width=32, expert_mlp=64, action_dim=8, action_horizon=4, state_dim=8)
    openpi_checkpoint(tmp_path / "model.safetensors", KIModel(config), pi05=True)
    with pytest.raises(WeightsError, match="no such parameter"):
        load_openpi(KIModel(ModelConfig(**{**config.__dict__, "time_conditioning": "concat",
                                           "state_input": "expert"})), tmp_path)


def test_unknown_checkpoint_keys_are_named():
    with pytest.raises(WeightsError, match="mystery"):
        translate("paligemma_with_expert.mystery.weight")
    assert translate("language_model.model.layers.3.mlp.up_proj.weight") == "layers.3.mlp.up.weight"
    assert translate("language_model.lm_head.weight") is None


# ---------------------------------------------------------------- layer by layer, at larger weights
def test_the_mlps_use_the_tanh_gelu_of_gemma_and_siglip_not_erf():
    # At weights large enough that tanh- and erf-GELU differ by far more than float error, each MLP
    # equals transformers' own layer with that checkpoint's activation (gelu_pytorch_tanh).
    from transformers.models.gemma.modeling_gemma import GemmaMLP
    from transformers.models.siglip.modeling_siglip import SiglipMLP

    from kidata.model.layers import GeGLU, VisionBlock

    torch.manual_seed(0)
    x = torch.randn(4, 7, 32) * 3
    gemma = GemmaMLP(transformers.GemmaConfig(hidden_size=32, intermediate_size=64, hidden_act="gelu_pytorch_tanh"))
    ours = GeGLU(32, 64)
    for name in ("gate", "up", "down"):
        getattr(ours, name).weight.data.copy_(getattr(gemma, f"{name}_proj").weight.data * 4)
        getattr(gemma, f"{name}_proj").weight.data.mul_(4)
    erf = gemma.down_proj(torch.nn.functional.gelu(gemma.gate_proj(x)) * gemma.up_proj(x))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), gemma(x), atol=1e-5, rtol=1e-5)
        assert (ours(x) - erf).abs().max() > 1e-2  # the test can tell the two apart

    siglip = SiglipMLP(transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, hidden_act="gelu_pytorch_tanh"))
    block = VisionBlock(32, 2, 64)
    for ours_layer, theirs in ((block.fc1, siglip.fc1), (block.fc2, siglip.fc2)):
        theirs.weight.data.mul_(4)
        ours_layer.weight.data.copy_(theirs.weight.data)
        ours_layer.bias.data.copy_(theirs.bias.data)
    with torch.no_grad():
        mlp = block.fc2(torch.nn.functional.gelu(block.fc1(x), approximate="tanh"))
        torch.testing.assert_close(mlp, siglip(x), atol=1e-5, rtol=1e-5)
        assert (block.fc2(torch.nn.functional.gelu(block.fc1(x))) - siglip(x)).abs().max() > 1e-4  # 10x the tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_two_cameras_and_padded_rows_give_transformers_logits(tmp_path, dtype):
    reference = tiny_paligemma(tmp_path).to(dtype)
    ours = KIModel(config_from_paligemma(tmp_path, action_dim=8, action_horizon=4, expert_width=32,
                                         expert_mlp=64, state_dim=8)).eval()
    load_paligemma(ours, tmp_path)
    ours = ours.to(dtype)
    g = torch.Generator().manual_seed(5)
    pixels = torch.rand(2, 2, 3, 32, 32, generator=g) * 2 - 1  # two cameras per row
    text = torch.randint(3, 2000, (2, 8), generator=g)
    lengths = [8, 5]  # the second row is padded after 5 tokens
    patches = 16
    input_ids = torch.cat([torch.full((2, 2 * patches), IMAGE_TOKEN), text], dim=1)
    attention = torch.ones_like(input_ids)
    attention[1, 2 * patches + lengths[1]:] = 0
    token_type_ids = torch.zeros_like(input_ids)  # the whole prompt bidirectional (prefix-LM)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixels.flatten(0, 1).to(dtype), attention_mask=attention,
                             token_type_ids=token_type_ids).logits[:, 2 * patches:].float()
    token_mask = torch.arange(8)[None] < torch.tensor(lengths)[:, None]
    batch = {"images": pixels.to(dtype), "image_mask": torch.ones(2, 2, dtype=torch.bool), "tokens": text,
             "ar": torch.zeros(2, 8, dtype=torch.bool), "token_mask": token_mask}
    with torch.no_grad():
        hidden, _, _, _, text_start = ours.run_backbone(batch)
        logits = (hidden[:, text_start:] @ ours.embed.weight.T).float()
    tolerance = 1e-4 if dtype == torch.float32 else 0.15  # bf16: 8 mantissa bits through 2 + 2 layers
    for row, length in enumerate(lengths):
        torch.testing.assert_close(logits[row, :length], expected[row, :length], atol=tolerance, rtol=0)


SMALL = dict(image_size=32, patch_size=8, vision_width=32, vision_depth=2, vision_heads=2, vision_mlp=64,
             vocab_size=256, width=64, depth=2, heads=4, kv_heads=1, head_dim=16, mlp=128, expert_width=32,
             expert_mlp=64, action_dim=4, action_horizon=4, state_dim=4, state_input="prefix")


@pytest.mark.parametrize("variant", ["ki", "pi0", "joint", "pi0_fast", "frozen", "hybrid"])
def test_a_vlm_backbone_loads_into_every_variant_and_leaves_the_rest_fresh(tmp_path, variant):
    from kidata.model.weights import save_weights
    from kidata.training.initialize import load_kidata

    torch.manual_seed(1)
    vlm = KIModel(ModelConfig(**SMALL, variant="vlm"))
    save_weights(vlm, tmp_path / "vlm.safetensors")
    torch.manual_seed(2)
    model = KIModel(ModelConfig(**SMALL, variant=variant))
    fresh = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    report = load_kidata(model, tmp_path / "vlm.safetensors")
    assert report["loaded_parts"] == {"vision": 2 + 1 + 2 * 16 + 2, "projector": 2, "embedding": 1,
                                      "decoder": 2 * 9 + 1}
    source = vlm.state_dict()
    backbone = {name for name in source if name.split(".")[0] in ("vision", "projector", "embed", "layers", "final_norm")}
    assert report["loaded"] == len(backbone) == sum(report["loaded_parts"].values())
    for name, tensor in model.state_dict().items():
        expected = source[name] if name in backbone else fresh[name]
        torch.testing.assert_close(tensor, expected, rtol=0, atol=0, msg=name)
    assert "state_proj.weight" in report["fresh"]
    assert any(name.startswith("expert_layers.") for name in report["fresh"]) == (variant != "pi0_fast")


def test_a_kidata_backbone_of_another_size_or_path_is_refused_naming_it(tmp_path):
    from kidata.model.weights import save_weights
    from kidata.training.initialize import load_kidata

    save_weights(KIModel(ModelConfig(**SMALL, variant="vlm")), tmp_path / "vlm.safetensors")
    wider = KIModel(ModelConfig(**{**SMALL, "mlp": 256}))
    with pytest.raises(WeightsError, match=r"layers.0.mlp.down.weight \(64, 128\) vs the model's \(64, 256\)"):
        load_kidata(wider, tmp_path / "vlm.safetensors")
    with pytest.raises(WeightsError, match="no such kidata run, checkpoint or weights file"):
        load_kidata(wider, tmp_path / "missing")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(WeightsError, match="the run has no checkpoint yet"):
        load_kidata(wider, tmp_path / "run")


@pytest.mark.parametrize("source_variant", ["ki", "vlm"])
def test_a_robot_runs_prefix_state_projection_comes_with_its_backbone_and_a_vlm_runs_does_not(tmp_path, source_variant):
    import json

    from kidata.training.checkpoint import save_checkpoint
    from kidata.training.initialize import load_kidata

    torch.manual_seed(1)
    source = KIModel(ModelConfig(**SMALL, variant=source_variant))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"variant": source_variant, "state_input": "prefix"}}))
    save_checkpoint(run, 10, model=source.state_dict(), optimizer={"state": {}, "param_groups": []}, ema=None,
                    trainer={"step": 10}, keep=1)
    torch.manual_seed(2)
    model = KIModel(ModelConfig(**SMALL, variant="ki"))
    fresh = model.state_proj.weight.detach().clone()
    report = load_kidata(model, run)
    expected = source.state_proj.weight if source_variant == "ki" else fresh
    torch.testing.assert_close(model.state_proj.weight, expected, rtol=0, atol=0)
    assert ("state_proj.weight" in report["fresh"]) == (source_variant == "vlm")
    assert ("state_input" in report["loaded_parts"]) == (source_variant == "ki")


def test_init_from_a_checkpoint_with_a_flipped_byte_is_refused_naming_the_file(tmp_path):
    """train.init_from reads a kidata checkpoint through the policy's verified loader."""
    from kidata.training.checkpoint import CheckpointError, save_checkpoint
    from kidata.training.initialize import load_kidata

    source = KIModel(ModelConfig(**SMALL, variant="vlm"))
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = save_checkpoint(run, 10, model=source.state_dict(), optimizer={"state": {}, "param_groups": []},
                                 ema=None, trainer={"step": 10}, keep=1)
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: same size, still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"step_0000010 cannot be used: .*model.safetensors does not match its "
                                              r"sha256 \(damaged\)"):
        load_kidata(KIModel(ModelConfig(**SMALL, variant="ki")), checkpoint)
