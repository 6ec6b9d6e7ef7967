"""The network: ``ModelConfig`` presets, ``KIModel`` (backbone + action expert), weights."""

from __future__ import annotations

from kidata.lazy import lazy_exports

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
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
