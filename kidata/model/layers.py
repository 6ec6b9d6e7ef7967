"""Building blocks: Gemma's RMSNorm, rotary embeddings, GeGLU MLP, the SigLIP-style vision tower,
and the adaptive RMSNorm that brings flow time into the action expert."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: x / rms(x) * (1 + weight), weight initialized at zero."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale and shift come from the time embedding, plus a residual gate (pi0.5).

    The modulation layer is zero-initialized, so at initialization the norm is a plain RMSNorm and
    every gated residual branch is closed."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.modulation = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, dim], cond [B, cond_dim] -> (normed [B, L, dim] in x's dtype, gate [B, 1, dim]).
        The variance, normalization and modulation run in float32 whatever x's dtype (as openpi
        and Gemma's RMSNorm): a bf16 mean of squares loses the small components of wide rows."""
        scale, shift, gate = self.modulation(cond)[:, None, :].chunk(3, dim=-1)
        wide = x.float()
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + scale.float()) + shift.float()).type_as(x), gate


def gated_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None):
    """(normed, gate): adaptive norms return a residual gate, plain norms none."""
    return norm(x, cond) if isinstance(norm, AdaRMSNorm) else (norm(x), None)


def gated_residual(x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """x + branch, the branch scaled by an adaptive norm's gate when there is one."""
    return x + (branch if gate is None else gate * branch)


class GeGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.gate(x), approximate="tanh") * self.up(x))


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding of x [B, heads, L, head_dim] at integer positions [B, L]."""
    half = x.shape[-1] // 2
    frequencies = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions[:, None, :, None].float() * frequencies
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half].float(), x[..., half:].float()
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).type_as(x)


def timestep_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of flow time t in [0, 1] (periods from 4e-3 to 4, as openpi)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t[:, None].float() / period * 2 * math.pi
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class VisionBlock(nn.Module):
    """A SigLIP encoder block: pre-LayerNorm attention and GELU(tanh) MLP, biases everywhere."""

    def __init__(self, width: int, heads: int, mlp: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        q, k, v = (proj(normed).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.q, self.k, self.v))
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class VisionTower(nn.Module):
    """SigLIP ViT as PaliGemma uses it (no pooling head): patch embedding, learned positions,
    pre-norm blocks, final LayerNorm. Layout mirrors Hugging Face's SiglipVisionModel so that
    checkpoints map one tensor to one tensor."""

    def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, mlp: int,
                 stem: tuple[int, ...] = ()) -> None:
        super().__init__()
        if stem:  # a convolutional stem in place of the patch embedding (ModelConfig.vision_stem)
            layers, channels = [], 3
            for out in stem:
                layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU(approximate="tanh")]
                channels = out
            rest = patch // 2 ** len(stem)
            self.stem = nn.Sequential(*layers, nn.Conv2d(channels, width, rest, stride=rest))
        else:
            self.patch = nn.Conv2d(3, width, patch, stride=patch)
        self.positions = nn.Parameter(torch.randn((image_size // patch) ** 2, width) * 0.02)
        self.blocks = nn.ModuleList(VisionBlock(width, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, S, S] in [-1, 1] -> patch features [B, P, width]."""
        embed = self.stem if hasattr(self, "stem") else self.patch
        x = embed(images).flatten(2).transpose(1, 2) + self.positions
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
