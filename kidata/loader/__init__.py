"""A built mixture as a resumable torch dataset, and batches for the model (``kidata.loader.collate.collate``:
the function shares its module's name, so it is imported from the module)."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "MixtureDataset": "kidata.loader.mixture",
    "Augment": "kidata.loader.collate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
