"""Building mixtures: recipes in, webdataset shards and a manifest out (``kidata.pipelines.build.build``;
names that are also submodules stay in their module: ``build``, ``verify``, ``inspect_build``)."""

from __future__ import annotations

import importlib
from typing import Any

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "load_recipe": "kidata.pipelines.recipe",
    "parse_recipe": "kidata.pipelines.recipe",
    "fit_fast_from_recipe": "kidata.pipelines.stats_pass",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
