"""Process group, DDP / FSDP2 wrapping and whole-model state dicts: everything the trainer does
differently on more than one process, kept apart from the model code (as in torchtitan)."""

from __future__ import annotations

import os
import sys
from typing import Any

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


def shard_per_block(model: KIModel, *, bf16: bool) -> torch.nn.Module:
    """FSDP2 units per transformer block: each vision block, each backbone layer and each expert
    layer, then the root (embedding, projector, norms, action heads). Only a block's weights are
    whole while it computes, so memory holds the shards plus a couple of blocks (README, memory
    model). Decoder and expert layers are called through ``project`` and ``finish`` (the joint
    layer interleaves both streams' attention), so those two methods carry FSDP's hooks: a layer
    is gathered for each call, and its gradient reduced for each (FSDP2 accumulates them into the
    sharded gradient; tests/test_train.py compares the weights with DDP's after 6 steps). With
    bf16, parameters are cast to bf16 for compute and gradients reduced in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.vision.blocks:
        fully_shard(block, mp_policy=policy)
    streams = [model.layers] + ([model.expert_layers] if model.config.has_expert else [])
    for layers in streams:
        for layer in layers:
            fully_shard(layer, mp_policy=policy)
            register_fsdp_forward_method(layer, "project")
            register_fsdp_forward_method(layer, "finish")
    return fully_shard(model, mp_policy=policy)


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
        digest.update(local.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

