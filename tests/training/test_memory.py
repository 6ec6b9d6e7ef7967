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


def test_traced_activations_are_the_bytes_autograd_saves_on_real_tensors():
    """The fake-tensor trace against the same forward on real CPU tensors, storage by storage."""
    torch = pytest.importorskip("torch")
    from kidata.model.config import ModelConfig
    from kidata.model.ki_model import KIModel
    from kidata.training.activations import fake_batch, trace_activations

    config = ModelConfig.load("ki_tiny", lora={"backbone_rank": 4})
    model = KIModel(config).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    inputs = fake_batch(config, 3, 20, 2)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs, noise=torch.zeros_like(inputs["actions"]), t=torch.full((3,), 0.5))
    trace = trace_activations(config, batch=3, tokens=20, cameras=2)
    assert trace.outside_layers + sum(trace.per_layer) == sum(saved.values())
    assert trace.largest == max(saved.values())


def test_checkpointing_keeps_every_layers_inputs_and_one_layers_activations():
    from kidata.training.activations import ActivationTrace

    trace = ActivationTrace(outside_layers=100, per_layer=(40, 50, 40), layer_inputs=9, largest=30)
    assert trace.total(checkpointing=False) == 100 + 130 + 30
    assert trace.total(checkpointing=True) == 100 + 9 + 50 + 30


def test_a_lora_plan_holds_gradients_and_adamw_for_the_trained_parameters_alone():
    pytest.importorskip("torch")
    from kidata.model.config import ModelConfig
    from kidata.training.memory import plan, preset_sizes

    config = ModelConfig.load("ki_tiny", lora={})
    total, trainable, _ = preset_sizes(config)
    assert trainable < total
    one = plan(config, batch=4, tokens=16, cameras=1, bf16=True)
    assert (one.parameters, one.gradients, one.optimizer, one.ema, one.copies) == (
        4 * total, 4 * trainable, 8 * trainable, 0, 2 * trainable)
    two = plan(config, batch=4, gpus=2, tokens=16, cameras=1, bf16=True, ema=True)
    assert (two.parameters, two.gradients, two.optimizer, two.ema) == (2 * total, 2 * trainable, 4 * trainable,
                                                                      2 * trainable)
    assert two.activations < one.activations  # each of the 2 GPUs holds half the batch


def test_the_memory_command_prints_each_part_the_total_and_the_cards_it_fits(capsys):
    pytest.importorskip("torch")
    from kidata.cli import main

    assert main(["model", "memory", "--preset", "ki_tiny", "--lora", "--batch", "4", "--tokens", "16"]) == 0
    out = capsys.readouterr().out
    for row in ("parameters (fp32, frozen included)", "gradients", "AdamW state", "weight EMA", "activations",
                "**total**"):
        assert f"| {row} |" in out
    assert "LoRA ranks 16/32" in out
    assert "fits: 24 GB yes, 40 GB yes, 80 GB yes, 141 GB yes" in out


def test_frozen_linear_weights_stored_in_bf16_count_two_bytes_each_in_the_plan():
    torch = pytest.importorskip("torch")
    from kidata.model.config import ModelConfig
    from kidata.model.ki_model import KIModel
    from kidata.model.lora import LoRALinear
    from kidata.training.memory import frozen_linear_params, plan

    config = ModelConfig.load("ki_tiny", lora={})
    with torch.device("meta"):
        net = KIModel(config)
    linear = sum(parameter.numel() for module in net.modules()
                 if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, LoRALinear))
                 for parameter in module.parameters(recurse=False) if not parameter.requires_grad)
    assert frozen_linear_params(config) == linear > 0
    wide = plan(config, batch=4, tokens=16, cameras=1, bf16=True)
    narrow = plan(config, batch=4, tokens=16, cameras=1, bf16=True, frozen_bf16=True)
    assert wide.parameters - narrow.parameters == 2 * linear
    assert (narrow.gradients, narrow.optimizer, narrow.copies) == (wide.gradients, wide.optimizer, wide.copies)
    assert narrow.activations < wide.activations  # autocast no longer saves a bf16 cast of each frozen weight
    with pytest.raises(ValueError, match="frozen weights stored in bf16 need bf16 autocast"):
        plan(config, batch=4, tokens=16, cameras=1, bf16=False, frozen_bf16=True)
