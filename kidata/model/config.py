"""Model configuration: a frozen dataclass loaded from TOML presets in the top-level ``model/``."""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VARIANTS = ("ki", "joint", "pi0")


@dataclass(frozen=True)
class ModelConfig:
    """Widths and depths of the three parts, the action space, and which recipe to train.

    variant: ``ki`` (FAST + flow, expert sees the backbone through a stop-gradient: the paper's
    method), ``joint`` (FAST + flow, gradients flow), ``pi0`` (flow only, no FAST loss).
    """

    # vision encoder (SigLIP-style ViT) and projector
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_heads: int = 16
    vision_mlp: int = 4304
    # backbone decoder (Gemma-style)
    vocab_size: int = 257152
    width: int = 2048
    depth: int = 18
    heads: int = 8
    kv_heads: int = 1
    head_dim: int = 256
    mlp: int = 16384
    # action expert: same depth, heads and head_dim, its own width
    expert_width: int = 1024
    expert_mlp: int = 4096
    # actions
    action_dim: int = 32
    action_horizon: int = 10
    state_dim: int = 32
    continuous_state: bool = False
    # training recipe
    variant: str = "ki"
    flow_weight: float = 1.0  # alpha of the paper's combined loss
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.width % self.heads or self.heads % self.kv_heads:
            raise ValueError("heads must divide width and kv_heads must divide heads")

    @property
    def stop_gradient(self) -> bool:
        return self.variant == "ki"

    @property
    def fast_loss(self) -> bool:
        return self.variant in ("ki", "joint")

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "ModelConfig":
        data = tomllib.loads(Path(path).read_text())
        data = {**data.get("model", data), **overrides}
        valid = [f.name for f in fields(cls)]
        for key in data:
            if key not in valid:
                nearest = difflib.get_close_matches(key, valid, n=1)
                raise ValueError(f"{path}: unknown model key {key!r}" + (f" (did you mean {nearest[0]!r}?)" if nearest else ""))
        return cls(**data)
