"""The network: ``ModelConfig`` presets, ``KIModel`` (backbone + action expert), weights."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "ModelConfig": "kidata.model.config",
    "KIModel": "kidata.model.ki_model",
    "load_paligemma": "kidata.model.weights",
    "load_openpi": "kidata.model.weights",
    "config_from_paligemma": "kidata.model.weights",
    "save_weights": "kidata.model.weights",
    "load_weights": "kidata.model.weights",
    "parameter_counts": "kidata.model.weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
