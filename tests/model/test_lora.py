"""LoRA fine-tuning (``[model] lora``): which parameters train, adapters at initialization, the
stop-gradient under ``ki``, merging for inference and export, and the config."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from support.model import TINY, fixed, make_batch  # noqa: E402

from kidata.config import ConfigError  # noqa: E402
from kidata.model.config import LoraConfig, ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.model.lora import LoRALinear, merge, merge_tensors  # noqa: E402

SHAPE = {"image_size": 32, "patch_size": 8, "action_horizon": 4}  # make_batch's sizes
ADAPTED = ("q", "k", "v", "o", "mlp.gate", "mlp.up", "mlp.down")
HEADS = ("action_in", "action_out", "time_mlp_in", "time_mlp_out")


def adapters(stream: str, depth: int = 2) -> set[str]:
    return {f"{stream}.{i}.{target}.{kind}" for i in range(depth) for target in ADAPTED for kind in ("lora_a", "lora_b")}


def trained(net: KIModel) -> set[str]:
    return {name for name, parameter in net.named_parameters() if parameter.requires_grad}


def lora_model(seed: int = 0, variant: str = "ki", **lora) -> KIModel:
    torch.manual_seed(seed)
    return KIModel(ModelConfig.load(TINY, variant=variant, lora=lora, **SHAPE))


def test_the_shipped_lora_preset_has_openpis_ranks_and_frozen_vision():
    config = ModelConfig.load("ki_2b_lora")
    assert config.lora == LoraConfig(backbone_rank=16, expert_rank=32, alpha=0.0,
                                     targets=("q", "k", "v", "o", "gate", "up", "down"), train_vision=False,
                                     train_heads=True)
    assert config.lora.scale(16) == config.lora.scale(32) == 1.0  # openpi's alpha = rank


def test_a_lora_key_that_does_not_exist_is_refused_naming_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'model.lora.backbone_rnak' \(did you mean 'backbone_rank'\?\)"):
        ModelConfig.load(TINY, lora={"backbone_rnak": 8})
    with pytest.raises(ValueError, match=r"model.lora.targets \['qkv'\]: choose among"):
        ModelConfig.load(TINY, lora={"targets": ["qkv"]})


def test_only_the_adapters_and_the_experts_action_and_time_heads_train():
    net = lora_model()
    heads = {f"{head}.{kind}" for head in HEADS for kind in ("weight", "bias")}
    assert trained(net) == adapters("layers") | adapters("expert_layers") | heads


def test_without_heads_the_adapters_alone_train_and_vision_can_be_opted_in():
    assert trained(lora_model(train_heads=False)) == adapters("layers") | adapters("expert_layers")
    with_vision = trained(lora_model(train_heads=False, train_vision=True))
    net = lora_model()
    vision = {name for name, _ in net.named_parameters() if name.startswith(("vision.", "projector."))}
    assert with_vision == adapters("layers") | adapters("expert_layers") | vision


def test_an_expert_rank_of_zero_trains_the_expert_in_full_and_a_frozen_backbone_gets_no_adapters():
    net = lora_model(expert_rank=0)
    expert = {name for name, p in net.named_parameters() if name.startswith(("expert_", *HEADS))}
    assert trained(net) == adapters("layers") | expert
    frozen = lora_model(variant="frozen")
    assert not any(name.startswith("layers.") and "lora" in name for name, _ in frozen.named_parameters())
    assert not any(name.startswith(("layers.", "vision.", "embed")) for name in trained(frozen))


def test_fresh_adapters_compute_the_base_models_outputs_bit_for_bit():
    torch.manual_seed(0)
    base = KIModel(ModelConfig.load(TINY, **SHAPE))
    adapted = lora_model(seed=0)  # same seed: same base weights, adapters drawn after them
    assert all(torch.equal(base.state_dict()[name], tensor) for name, tensor in adapted.state_dict().items()
               if "lora" not in name)
    batch = make_batch()
    expected, actual = base(batch, **fixed(batch)), adapted(batch, **fixed(batch))
    for key in ("loss", "logits", "velocity"):
        assert torch.equal(expected[key], actual[key]), key
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    assert torch.equal(base.sample_actions(prefix, noise=noise), adapted.sample_actions(prefix, noise=noise))


def open_adapters(net: KIModel) -> KIModel:
    """Non-zero B everywhere (fresh B = 0 would make A's gradient zero whatever the graph), and the
    expert's zero-initialized residual gates opened, so that every path carries signal."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.abs().sum() == 0:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.05)
    return net


def adapter_grads(net: KIModel, loss: torch.Tensor, stream: str) -> list:
    net.zero_grad()
    loss.backward()
    return [p.grad for name, p in net.named_parameters() if name.startswith(f"{stream}.") and "lora" in name]


def test_flow_gradients_never_reach_the_backbone_adapters_under_ki():
    net, batch = open_adapters(lora_model()), make_batch()
    backbone = adapter_grads(net, net(batch, **fixed(batch))["flow_loss"], "layers")
    assert backbone and all(g is None or torch.count_nonzero(g) == 0 for g in backbone)
    expert = adapter_grads(net, net(batch, **fixed(batch))["flow_loss"], "expert_layers")
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in expert)


@pytest.mark.parametrize("variant", ["joint", "pi0"])
def test_without_insulation_flow_gradients_reach_every_backbone_key_and_value_adapter(variant):
    net, batch = open_adapters(lora_model(variant=variant)), make_batch()
    net.zero_grad()
    net(batch, **fixed(batch))["flow_loss"].backward()
    for index in range(2):
        for target in ("k", "v"):
            for kind in ("lora_a", "lora_b"):
                grad = net.get_parameter(f"layers.{index}.{target}.{kind}").grad
                assert grad is not None and torch.count_nonzero(grad) > 0, (index, target, kind)


def test_a_few_optimizer_steps_change_the_trained_tensors_alone():
    net, batch = open_adapters(lora_model()), make_batch()  # open gates: as a pretrained expert's
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        net(batch, **fixed(batch))["loss"].backward()
        optimizer.step()
    changed = {name for name, tensor in net.state_dict().items() if not torch.equal(before[name], tensor)}
    assert changed == trained(net)


def test_a_merged_adapter_is_the_weight_plus_scaled_b_times_a():
    torch.manual_seed(0)
    for shape in ((6, 6), (3, 5)):  # square and not: a transposed product fails either way
        base = torch.nn.Linear(shape[1], shape[0], bias=True)
        layer = LoRALinear(base, rank=2, scale=0.5)
        with torch.no_grad():
            layer.lora_b.normal_()
        merged = layer.merged()
        torch.testing.assert_close(merged.weight, base.weight + 0.5 * layer.lora_b @ layer.lora_a, rtol=0, atol=1e-6)
        x = torch.randn(4, shape[1])
        torch.testing.assert_close(merged(x), layer(x), rtol=0, atol=1e-5)


def test_merging_a_model_keeps_its_actions_and_matches_merging_its_tensors():
    net, batch = open_adapters(lora_model(alpha=8.0)), make_batch()
    tensors = merge_tensors(net.state_dict(), net.config.lora)
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    unmerged = net.sample_actions(prefix, noise=noise)
    merged = merge(net)
    assert merged.config.lora is None and not any("lora" in name for name in merged.state_dict())
    torch.testing.assert_close(merged.sample_actions(prefix, noise=noise), unmerged, rtol=0, atol=1e-5)
    plain = KIModel(merged.config)
    plain.load_state_dict(tensors)
    assert all(torch.equal(plain.state_dict()[name], tensor) for name, tensor in merged.state_dict().items())


def test_open_adapters_change_the_outputs():
    """The counterpart of the identity test: adapters with B != 0 are not inert."""
    batch = make_batch()
    torch.manual_seed(0)
    plain = KIModel(ModelConfig.load(TINY, **SHAPE))
    adapted = open_adapters(lora_model(seed=0))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora" not in name:
                parameter.copy_(plain.state_dict()[name])
    assert not torch.equal(plain(batch, **fixed(batch))["logits"], adapted(batch, **fixed(batch))["logits"])


def test_an_openpi_checkpoint_fills_the_base_weights_under_fresh_adapters(tmp_path):
    pytest.importorskip("transformers")
    from dataclasses import replace

    from support.model import openpi_checkpoint

    from kidata.model.weights import load_openpi

    config = ModelConfig(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
                         vocab_size=300, width=64, depth=1, heads=4, kv_heads=1, head_dim=16, mlp=128,
                         expert_width=32, expert_mlp=64, action_dim=8, action_horizon=4, state_dim=8)
    reference = KIModel(config)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    openpi_checkpoint(tmp_path / "model.safetensors", reference, pi05=True)
    ours = KIModel(replace(config, lora=LoraConfig(backbone_rank=4, expert_rank=8)))
    report = load_openpi(ours, tmp_path)
    assert report["fresh"] == sorted(name for name in ours.state_dict() if "lora" in name)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name
    assert all(torch.count_nonzero(p) == 0 for name, p in ours.named_parameters() if name.endswith("lora_b"))



def linear_tensor_names(net: KIModel) -> set[str]:
    """Names of the weights and biases of every linear and convolution layer (LoRA's bases included)."""
    return {f"{module_name}.{name}" for module_name, module in net.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, LoRALinear))
            for name, parameter in module.named_parameters(recurse=False) if parameter is not None}


def test_frozen_linear_weights_stored_in_bf16_train_bit_for_bit_as_fp32_ones_under_bf16_autocast():
    from kidata.model.lora import store_frozen_in_bf16

    runs = []
    for frozen_bf16 in (False, True):
        net = lora_model()
        with torch.no_grad():
            for name, parameter in net.named_parameters():
                if name.endswith("lora_b"):  # open the adapters so they carry signal both ways
                    parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        if frozen_bf16:
            cast = store_frozen_in_bf16(net)
            narrow = {name for name, parameter in net.named_parameters() if parameter.dtype == torch.bfloat16}
            frozen = {name for name, parameter in net.named_parameters() if not parameter.requires_grad}
            assert narrow == linear_tensor_names(net) & frozen and cast == len(narrow)
            assert "embed.weight" not in narrow and "layers.0.q.lora_a" not in narrow
        batch = make_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(batch, **fixed(batch))
        out["loss"].backward()
        runs.append((out["loss"], {name: p.grad for name, p in net.named_parameters() if p.requires_grad}))
    (loss_wide, grads_wide), (loss_narrow, grads_narrow) = runs
    assert torch.equal(loss_wide, loss_narrow)
    assert grads_wide.keys() == grads_narrow.keys()
    assert all(torch.equal(grads_wide[name], grads_narrow[name]) for name in grads_wide)


def test_a_bf16_base_merges_into_fp32_weights_that_keep_the_adapters_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 3, bias=True).to(torch.bfloat16)
    layer = LoRALinear(base, rank=2, scale=0.5)
    layer.lora_a.data, layer.lora_b.data = layer.lora_a.data.float(), torch.randn(3, 2) * 1e-3
    expected = base.weight.float() + 0.5 * layer.lora_b @ layer.lora_a
    merged = layer.merged()
    assert merged.weight.dtype == torch.float32
    torch.testing.assert_close(merged.weight, expected, rtol=0, atol=1e-7)
    tensors = {"q.weight": base.weight, "q.lora_a": layer.lora_a, "q.lora_b": layer.lora_b}
    merged_tensors = merge_tensors(tensors, LoraConfig(backbone_rank=2, alpha=1.0))
    torch.testing.assert_close(merged_tensors["q.weight"], expected, rtol=0, atol=1e-7)
