"""Process group, DDP / FSDP2 wrapping and whole-model state dicts: everything the trainer does
differently on more than one process, kept apart from the model code (as in torchtitan)."""

from __future__ import annotations

import os
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
        called without an active exception" after a finished FSDP run)."""
        if self.owns_group and dist.is_initialized():
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


def parallelize(model: KIModel, config: TrainConfig, world: int) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, under FSDP2 or DDP on more than one
    process, compiled with ``train.compile``."""
    wrapped: torch.nn.Module = model
    if world > 1 and config.train.fsdp:
        from torch.distributed.fsdp import fully_shard

        # One FSDP2 unit: parameters, gradients and optimizer state sharded across ranks, the
        # weights gathered for each forward/backward. (Per-layer units need both streams' layers
        # grouped behind one module call; the joint layer touches two modules' weights.)
        wrapped = fully_shard(model)
    elif world > 1:
        # pi0 trains no token loss, so the final norm's output reaches no loss term
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=config.model.variant in ("pi0", "frozen"))
    if config.train.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def full_state_dicts(model: KIModel, optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def restore_state_dicts(model: KIModel, optimizer, checkpoint: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, checkpoint["model"], options=options)
    for group in checkpoint["optimizer"]["param_groups"]:
        group["betas"] = tuple(group["betas"])
    set_optimizer_state_dict(model, optimizer, checkpoint["optimizer"], options=options)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
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

