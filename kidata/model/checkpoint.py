"""Model weights as safetensors (no pickle) and parameter counts per part."""

from __future__ import annotations

from pathlib import Path

import torch

from kidata.model.config import ModelConfig
from kidata.model.ki_model import KIModel


def save_weights(model: KIModel, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(temporary))
    temporary.replace(path)


def load_weights(model: KIModel, path: str | Path) -> KIModel:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise KeyError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters per part, counted on the meta device (no memory, any preset size)."""
    with torch.device("meta"):
        model = KIModel(config)
    counts = {name: sum(p.numel() for m in modules for p in m.parameters())
              for name, modules in model.part_modules().items()}
    counts["total"] = sum(counts.values())
    return counts
