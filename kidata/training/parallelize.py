"""Process group, DDP / FSDP2 wrapping and whole-model state dicts: everything the trainer does
differently on more than one process, kept apart from the model code (as in torchtitan)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, ContextManager

import torch
import torch.distributed as dist

from kidata.model.ki_model import KIModel
from kidata.training.config import TrainConfig


class Distributed:
    """This process's rank, world size and device (``torchrun``'s environment, else one CPU/GPU)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owns_group = self.world > 1 and not dist.is_initialized()
        if self.owns_group:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def close(self) -> None:
        """Destroys the process group this run created: left to interpreter exit, gloo's threads
        could still be running when C++ static destructors ran (a rank aborted with "terminate
        called without an active exception" after a finished FSDP run). The ranks meet first, so
        none tears its group down while another still sends on it (seen once in ~20 two-process
        runs without the barrier)."""
        if self.owns_group and dist.is_initialized():
            if sys.exc_info()[0] is None:  # after an error the other ranks may never arrive
                dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def all_reduce(self, value: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``value`` summed (``op="sum"``) or its minimum (``"min"``) over the processes, on its device."""
        if self.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
        return value

    def gather(self, item: Any) -> list:
        if self.world == 1:
            return [item]
        out = [None] * self.world
        dist.all_gather_object(out, item)
        return out


def parallelize(model: KIModel, config: TrainConfig, world: int, *, bf16: bool = False) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, under FSDP2 or DDP on more than one
    process, compiled with ``train.compile``."""
    wrapped: torch.nn.Module = model
    if world > 1 and config.train.fsdp:
        wrapped = shard_per_block(model, bf16=bf16)
    elif world > 1:
        # pi0 trains no token loss, so the final norm's output reaches no loss term
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=config.model.variant in ("pi0", "frozen"))
    if config.train.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def gradient_sync(wrapped: torch.nn.Module, last: bool) -> ContextManager:
    """The context of one micro-batch's forward and backward: gradients are averaged over the
    processes on the step's last micro-batch only, and accumulate locally before it. DDP: a fresh
    ``no_sync()`` per micro-batch (one context manager object can be entered once). FSDP2:
    ``set_requires_gradient_sync`` (the unsharded gradients accumulate, one reduce-scatter per
    step). One process: nothing to do."""
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if not last and hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    return contextlib.nullcontext()


def shard_per_block(model: KIModel, *, bf16: bool) -> torch.nn.Module:
    """FSDP2 units per transformer block: each vision block, each layer pair (backbone layer
    ``i`` with expert layer ``i``), then the root (embedding, projector, norms, action heads).
    Only a block's weights are whole while it computes, so memory holds the shards plus a couple
    of blocks (README, memory model).

    A layer pair is one unit because the joint layer interleaves both streams (backbone and expert
    ``project``, attention over both, then both ``finish``): the pair is gathered once when the
    model's ``_joint_layer`` enters it and released when it leaves, and its gradients reduced
    once in backward. ``project`` and ``finish`` called on their own (inference: the prefix pass,
    the Euler steps, generation) gather the pair for that call.

    With bf16, parameters are cast to bf16 for compute and gradients reduced in fp32. The root
    leaves its inputs as they come (``cast_forward_inputs=False``): the flow's time, noise and
    actions stay fp32, as on one process (autocast computes the matmuls in bf16); the units
    inside cast their hidden states."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.vision.blocks:
        fully_shard(block, mp_policy=policy)
    inside = [False]  # True while a joint layer runs with its pair gathered
    for index, layer in enumerate(model.layers):
        pair = [layer] + ([model.expert_layers[index]] if model.config.has_expert else [])
        fully_shard(pair, mp_policy=policy)
        for member in pair:
            for name in ("project", "finish"):
                _hook_alone(member, name, inside)
        _add_unit_entry(layer, inside)
    _gather_once_per_pair(model)
    root = MixedPrecisionPolicy(param_dtype=policy.param_dtype, reduce_dtype=policy.reduce_dtype,
                                cast_forward_inputs=False)
    return fully_shard(model, mp_policy=root)


def _hook_alone(module: torch.nn.Module, name: str, inside: list[bool]) -> None:
    """``module.name`` gathers its unit when called on its own, and runs as is inside a joint layer
    (whose entry gathered the unit already: a hook there would release it mid-layer)."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    plain = getattr(module, name)
    register_fsdp_forward_method(module, name)
    hooked = getattr(module, name)

    def method(*args, **kwargs):
        return (plain if inside[0] else hooked)(*args, **kwargs)

    setattr(module, name, method)


def _add_unit_entry(layer: torch.nn.Module, inside: list[bool]) -> None:
    """``layer.run_unit(fn, *args)``: ``fn(*args)`` with the layer's unit gathered on entry and
    released on exit (FSDP's forward hooks around the call: its tensor arguments and outputs carry
    the backward hooks, so the unit is gathered once more in backward and reduced once)."""
    import types

    from torch.distributed.fsdp import register_fsdp_forward_method

    def run_unit(self, fn, *args):
        inside[0] = True
        try:
            return fn(*args)
        finally:
            inside[0] = False

    layer.run_unit = types.MethodType(run_unit, layer)
    register_fsdp_forward_method(layer, "run_unit")


def _gather_once_per_pair(model: KIModel) -> None:
    """Routes the model's joint layer ``i`` through pair ``i``'s unit entry."""
    joint = model._joint_layer

    def gathered(index: int, *args):
        return model.layers[index].run_unit(joint, index, *args)

    model._joint_layer = gathered


def full_state_dicts(model: KIModel, optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def _tuple_betas(state: dict) -> dict:
    """AdamW's betas as the tuple torch expects (JSON gave lists back)."""
    for group in state["param_groups"]:
        group["betas"] = tuple(group["betas"])
    return state


def sharded_state_dicts(model: KIModel, optimizer) -> tuple[dict, dict]:
    """This rank's shards (DTensors) of the model's and optimizer's state, for a sharded checkpoint."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return get_model_state_dict(model), get_optimizer_state_dict(model, optimizer)


def restore_shards(model: KIModel, optimizer, ema: dict | None, path, optimizer_rest: dict) -> None:
    """Loads a checkpoint's model, optimizer (and EMA) into this rank's tensors in place through
    ``torch.distributed.checkpoint``, from shard folders or whole files alike: each rank reads only
    the pieces it holds (its shards under FSDP2), whatever world size or layout wrote them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    from kidata.training.checkpoint import optimizer_state, optimizer_tensors, part_reader

    alone = not dist.is_initialized()  # one process: said, rather than warned about by DCP
    model_state, optimizer_full = sharded_state_dicts(model, optimizer)  # the optimizer's state initialized
    dcp.load(model_state, storage_reader=part_reader(path, "model"), no_dist=alone)
    set_model_state_dict(model, model_state)
    tensors, _ = optimizer_tensors(optimizer_full)
    dcp.load(tensors, storage_reader=part_reader(path, "optimizer"), no_dist=alone)
    set_optimizer_state_dict(model, optimizer, _tuple_betas(optimizer_state(tensors, optimizer_rest)))
    reader = part_reader(path, "ema") if ema is not None else None
    if reader is not None:
        dcp.load(ema, storage_reader=reader, no_dist=alone)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered from every rank under FSDP2: a collective, all ranks call it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def local_parameters_sha256(model: torch.nn.Module) -> str:
    """sha256 of the parameter bytes this process holds (its shard under FSDP2), in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        digest.update(name.encode())
        local = local.detach().cpu().contiguous()
        digest.update((local.view(torch.int16) if local.dtype == torch.bfloat16 else local).numpy().tobytes())
    return digest.hexdigest()

