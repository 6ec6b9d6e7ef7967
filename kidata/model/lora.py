"""Low-rank adaptation (LoRA, Hu et al. 2021) of the decoder and action-expert layers, as openpi's
``gemma_2b_lora`` + ``gemma_300m_lora`` fine-tune a pretrained pi0: the base weights stay frozen
and each targeted projection learns ``W + scale * B @ A`` with ``A`` [rank, in] and ``B``
[out, rank].

``B`` starts at zero (PEFT's convention; ``A`` draws from PyTorch's default Linear initializer),
so a model with fresh adapters computes exactly what its base computes, bit for bit. The adapted
projections keep their parameter names (``layers.0.q.weight``), so every loader (PaliGemma,
openpi, a kidata run) fills the base as before; the adapters add ``<name>.lora_a`` and
``<name>.lora_b``. ``merge`` folds them into the base weights for inference and export.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kidata.model.config import LORA_ATTENTION_TARGETS as ATTENTION_TARGETS
from kidata.model.config import LoraConfig

LORA_SUFFIXES = (".lora_a", ".lora_b")


class LoRALinear(nn.Module):
    """A bias-free or biased linear map ``x @ W.T + b`` plus ``scale * (x @ A.T) @ B.T``; it
    takes over the base layer's ``weight`` and ``bias`` parameters (same objects, same names)."""

    def __init__(self, base: nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scale = base.in_features, base.out_features, scale
        self.weight = base.weight
        self.bias = base.bias
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own initializer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding ``W + scale * B @ A`` (and the bias), in the adapters' dtype
        when the base is narrower (a base stored in bf16 beside fp32 adapters merges into fp32)."""
        dtype = torch.promote_types(self.weight.dtype, self.lora_a.dtype)
        with torch.device(self.weight.device):
            linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(merged_weight(self.weight, self.lora_a, self.lora_b, self.scale))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.lora_a.shape[0]}, scale={self.scale}"


def merged_weight(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """``W [out, in] + scale * B [out, r] @ A [r, in]``, computed in fp32 and returned in the wider
    of W's and A's dtypes: a bf16 base (``train.frozen_weights = "bf16"``) keeps its fp32 update."""
    return (weight.float() + scale * (lora_b.float() @ lora_a.float())).to(torch.promote_types(weight.dtype, lora_a.dtype))


def _targets(layer: nn.Module, targets: tuple[str, ...]):
    """(parent module, attribute) of each targeted projection of a decoder or expert layer."""
    for name in targets:
        yield (layer, name) if name in ATTENTION_TARGETS else (layer.mlp, name)


def apply_lora(model: nn.Module, config: LoraConfig | None) -> None:
    """Sets which parameters of ``model`` (a ``KIModel``) train, adding adapters first when
    ``config`` is set. Without LoRA every weight trains, but a ``frozen`` variant's backbone. With
    it: the adapters, and the parts ``config`` trains in full; a backbone that the variant freezes
    gets no adapters."""
    if config is None:
        for parameter in model.backbone_parameters() if model.config.backbone_frozen else ():
            parameter.requires_grad_(False)
        return
    c = model.config
    streams = []
    if config.backbone_rank and not c.backbone_frozen:
        streams.append((model.layers, config.backbone_rank))
    if c.has_expert and config.expert_rank:
        streams.append((model.expert_layers, config.expert_rank))
    for layers, rank in streams:
        for layer in layers:
            for parent, name in _targets(layer, config.targets):
                setattr(parent, name, LoRALinear(getattr(parent, name), rank, config.scale(rank)))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    parts = model.part_modules()
    full = []
    if config.train_vision:
        full += parts["vision"] + parts["projector"]
    if config.train_heads:
        full += parts.get("state_input", [])
        if c.has_expert:
            full += [module for module in parts["expert"] if module is not model.expert_layers
                     and module is not model.expert_final_norm]
    if c.has_expert and not config.expert_rank:
        full += parts["expert"]
    for module in full:
        module.requires_grad_(True)
    for name, parameter in model.named_parameters():
        if name.endswith(LORA_SUFFIXES):
            parameter.requires_grad_(True)
    if c.backbone_frozen:  # the variant's own rule wins over train_vision
        for parameter in model.backbone_parameters():
            parameter.requires_grad_(False)


def store_frozen_in_bf16(model: nn.Module) -> int:
    """Stores the frozen weights and biases of ``model``'s linear and convolution layers (LoRA's
    base projections included) in bf16, as openpi stores frozen weights; returns how many tensors
    it cast. Under bf16 autocast these layers compute on bf16 casts of their weights anyway, so the
    forward and the backward are the same bit for bit, while each such weight takes 2 bytes
    instead of 4 and is no longer cast anew at each use (the cast of a frozen fp32 weight stays
    saved for backward). Norm scales, the embedding (looked up, never cast) and position tables
    keep fp32. For bf16 runs only: an fp32 forward cannot multiply fp32 inputs by bf16 weights."""
    cast = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, LoRALinear)):
            for parameter in (module.weight, module.bias):
                if parameter is not None and not parameter.requires_grad and parameter.dtype != torch.bfloat16:
                    parameter.data = parameter.data.to(torch.bfloat16)
                    cast += 1
    return cast


def train_fresh(model: nn.Module, fresh: list[str]) -> str:
    """Makes the base weights that no checkpoint filled (``fresh``: the loaders' report) train in
    full, and says which. Adapters adapt pretrained weights: frozen random weights would stay
    random (a fresh adaRMS expert's zero gates would stay shut, and its layers with them), so an
    expert initialized from a VLM checkpoint trains whole while the backbone trains through its
    adapters."""
    wanted = set(fresh)
    opened = []
    for name, parameter in model.named_parameters():
        if name in wanted and not is_lora_name(name) and not parameter.requires_grad:
            parameter.requires_grad_(True)
            opened.append(name)
    parts = ", ".join(sorted({name.split(".")[0] for name in opened}))
    return (f"lora: {len(opened)} tensors no checkpoint filled train in full ({parts})" if opened
            else "lora: every base weight came from the checkpoint; adapters and heads train")


def merge(model: nn.Module) -> nn.Module:
    """Folds every adapter into its base weight in place (a plain ``nn.Linear`` again) and sets
    ``model.config.lora`` to None: the model then loads and saves as an unadapted one. Returns
    ``model``."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    model.config = replace(model.config, lora=None)
    return model


def is_lora_name(name: str) -> bool:
    return name.endswith(LORA_SUFFIXES)


def merge_tensors(tensors: Mapping[str, torch.Tensor], config: LoraConfig) -> dict[str, torch.Tensor]:
    """A state dict with adapters (``<p>.weight``, ``<p>.lora_a``, ``<p>.lora_b``) as one without:
    each ``<p>.weight`` merged, the adapter tensors dropped (``kidata export weights --merge-lora``)."""
    out = {name: tensor for name, tensor in tensors.items() if not is_lora_name(name)}
    for name, lora_a in tensors.items():
        if name.endswith(".lora_a"):
            prefix = name[: -len(".lora_a")]
            lora_b = tensors[f"{prefix}.lora_b"]
            out[f"{prefix}.weight"] = merged_weight(tensors[f"{prefix}.weight"], lora_a, lora_b,
                                                    config.scale(lora_a.shape[0]))
    return out
