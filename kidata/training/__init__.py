"""Training a model on a built mixture: ``TrainConfig`` presets and ``train``."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "TrainConfig": "kidata.training.config",
    "train": "kidata.training.trainer",
    "latest_checkpoint": "kidata.training.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
