"""Readers that yield robot episodes or VLM examples, and the registry that names them."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "open_source": "kidata.sources.registry",
    "lookup": "kidata.sources.registry",
    "register_reader": "kidata.sources.registry",
    "register_dataset": "kidata.sources.registry",
    "make_spec": "kidata.sources.spec",
    "spec_from_mapping": "kidata.sources.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
