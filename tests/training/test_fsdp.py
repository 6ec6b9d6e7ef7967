"""FSDP2 on one gloo process (CPU): the units the model is sharded into, how often each is
gathered, the dtype of the flow under bf16 mixed precision, and what the units hand back."""

from __future__ import annotations

import collections
import warnings

import pytest

torch = pytest.importorskip("torch")

from support.model import fixed, make_batch  # noqa: E402

from kidata import assets  # noqa: E402
from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.training.parallelize import shard_per_block  # noqa: E402

TINY = assets.ROOT / "model" / "ki_tiny.toml"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def process_group():
    import os

    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def tiny_pair(**overrides) -> tuple[KIModel, KIModel]:
    """The tiny preset twice with the same weights: (plain, to be sharded)."""
    torch.manual_seed(0)
    config = ModelConfig.load(TINY, image_size=32, patch_size=8, action_horizon=4, **overrides)
    plain, sharded = KIModel(config), KIModel(config)
    sharded.load_state_dict(plain.state_dict())
    return plain, sharded


@pytest.fixture
def gathers(monkeypatch) -> collections.Counter:
    """Counts, per FSDP unit (the tuple of its modules), each time its whole weights are
    materialized from the shards (one all-gather on more than one process)."""
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    counts: collections.Counter = collections.Counter()
    original = FSDPParamGroup._to_unsharded

    def to_unsharded(self):
        counts[tuple(self.modules)] += 1
        return original(self)

    monkeypatch.setattr(FSDPParamGroup, "_to_unsharded", to_unsharded)
    return counts


def test_each_backbone_layer_and_its_expert_layer_are_one_unit_gathered_once_in_forward_and_once_in_backward(
        process_group, gathers):
    from torch.distributed.fsdp import FSDPModule

    plain, sharded = tiny_pair()
    batch = make_batch()
    expected = plain(batch, **fixed(batch))["loss"]
    shard_per_block(sharded, bf16=False)
    assert all(isinstance(unit, FSDPModule) for unit in [sharded, *sharded.vision.blocks, *sharded.layers,
                                                          *sharded.expert_layers])
    assert not isinstance(sharded.embed, FSDPModule)  # in the root unit
    pairs = [(layer, expert) for layer, expert in zip(sharded.layers, sharded.expert_layers)]
    loss = sharded(batch, **fixed(batch))["loss"]
    assert {pair: gathers[pair] for pair in pairs} == {pair: 1 for pair in pairs}
    loss.backward()
    assert {pair: gathers[pair] for pair in pairs} == {pair: 2 for pair in pairs}
    assert {unit for unit in gathers if len(unit) == 1 and unit[0] in [*sharded.layers, *sharded.expert_layers]} == set()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    for layer, expert in pairs:
        assert all(p.grad is not None for p in [*layer.parameters(), *expert.parameters()])


def test_with_activation_checkpointing_the_recompute_uses_the_backward_gather_of_its_pair(process_group, gathers):
    plain, sharded = tiny_pair()
    batch = make_batch()
    plain.activation_checkpointing = sharded.activation_checkpointing = True
    expected = plain(batch, **fixed(batch))["loss"]
    expected.backward()
    shard_per_block(sharded, bf16=False)
    loss = sharded(batch, **fixed(batch))["loss"]
    loss.backward()
    pairs = list(zip(sharded.layers, sharded.expert_layers))
    assert {pair: gathers[pair] for pair in pairs} == {pair: 2 for pair in pairs}
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    grads = {name: p.grad for name, p in plain.named_parameters()}
    for name, parameter in sharded.named_parameters():
        torch.testing.assert_close(parameter.grad.full_tensor(), grads[name], atol=1e-6, rtol=1e-5)


def test_inference_outside_forward_gathers_a_pair_per_call_and_computes_what_the_plain_model_does(process_group):
    plain, sharded = tiny_pair()
    batch = make_batch()
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(1))
    expected = plain.sample_actions(batch, num_steps=2, noise=noise)
    shard_per_block(sharded, bf16=False)
    sharded(batch, **fixed(batch))["loss"].backward()  # a training step first (FSDP finds its root there)
    sharded.unshard()  # the root's weights, as the trainer's evaluation does; the layers gather per call
    torch.testing.assert_close(sharded.sample_actions(batch, num_steps=2, noise=noise), expected, atol=1e-6, rtol=1e-5)
    sharded.reshard()


def test_fsdp_bf16_keeps_the_flow_time_noise_x_t_and_loss_in_fp32(process_group, monkeypatch):
    """bf16 parameters (FSDP2's MixedPrecisionPolicy) and bf16 autocast, as ``kidata train`` runs
    them: t = 0.9 and 0.999 reach the expert as fp32 (bf16 would round them to 0.8984 and 1.0),
    x_t is t * noise + (1 - t) * actions in fp32, and the flow loss is the fp32 mean squared error
    of the velocity against noise - actions."""
    _, sharded = tiny_pair()
    batch = make_batch()
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.9, 0.999])[: batch["actions"].shape[0]]
    seen = {}
    expert_inputs = sharded.expert_inputs

    def record(noisy, time, batch):
        seen.update(noisy=noisy, t=time)
        return expert_inputs(noisy, time, batch)

    monkeypatch.setattr(sharded, "expert_inputs", record)
    shard_per_block(sharded, bf16=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sharded(batch, noise=noise, t=t)
    assert next(iter(sharded.layers[0].parameters())).dtype == torch.float32  # sharded fp32 masters...
    assert out["fast_loss"].dtype == torch.float32 and seen["t"].dtype == torch.float32
    assert seen["t"].tolist() == t.tolist()  # ...and bf16 compute, yet the time is exact
    actions = batch["actions"]
    assert seen["noisy"].dtype == torch.float32
    assert torch.equal(seen["noisy"], t[:, None, None] * noise + (1 - t[:, None, None]) * actions)
    assert out["flow_loss"].dtype == torch.float32 and out["velocity"].dtype == torch.float32
    weight = (batch["action_valid"][:, :, None] & batch["action_dim_mask"][:, None, :]
              & batch["has_actions"][:, None, None]).float()
    flow = (((out["velocity"].detach() - (noise - actions)) ** 2) * weight).sum() / weight.sum()
    torch.testing.assert_close(out["flow_loss"].detach(), flow, atol=0, rtol=1e-6)


def test_no_fsdp_unit_hands_back_a_view_that_an_in_place_op_could_detach_from_its_backward_hook(process_group):
    _, sharded = tiny_pair()
    batch = make_batch()
    shard_per_block(sharded, bf16=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sharded(batch, **fixed(batch))["loss"].backward()
    assert [str(w.message) for w in caught if "returned a view tensor" in str(w.message)] == []


def test_accumulating_two_micro_batches_reduces_each_unit_once_on_the_last(process_group, monkeypatch):
    """FSDP2 under ``gradient_sync``: the first micro-batch's gradients stay whole and local, the
    last one's backward reduce-scatters their sum once per unit; the sharded gradient is the sum
    of the two micro-batches' gradients of the plain model."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group

    from kidata.training.parallelize import gradient_sync

    reductions: list[int] = []
    original = _fsdp_param_group.foreach_reduce

    def counted(*args, **kwargs):
        reductions.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_fsdp_param_group, "foreach_reduce", counted)
    plain, sharded = tiny_pair()
    batches = [make_batch(seed) for seed in (0, 1)]
    for batch in batches:
        plain(batch, **fixed(batch))["loss"].backward()
    wrapped = shard_per_block(sharded, bf16=False)
    units = 1 + len(sharded.vision.blocks) + len(sharded.layers)  # the root, the vision blocks, the pairs
    done = []
    for index, batch in enumerate(batches):
        with gradient_sync(wrapped, last=index == len(batches) - 1):
            wrapped(batch, **fixed(batch))["loss"].backward()
        done.append(len(reductions))
    assert done == [0, units]
    grads = {name: p.grad for name, p in plain.named_parameters()}
    for name, parameter in sharded.named_parameters():
        torch.testing.assert_close(parameter.grad.full_tensor(), grads[name], atol=1e-6, rtol=1e-5)
