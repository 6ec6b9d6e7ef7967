"""Closed-loop evaluation of policies and the diagnostics that find what stops them."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "evaluate_metaworld": "kidata.eval.metaworld",
    "SceneSettings": "kidata.eval.metaworld",
    "ExpertPolicy": "kidata.eval.metaworld",
    "RandomPolicy": "kidata.eval.metaworld",
    "check_parity": "kidata.eval.parity",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
