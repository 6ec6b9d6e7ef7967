"""Building mixtures: recipes in, webdataset shards and a manifest out (``kidata.pipelines.build.build``;
names that are also submodules stay in their module: ``build``, ``verify``, ``inspect_build``)."""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "load_recipe": "kidata.pipelines.recipe",
    "parse_recipe": "kidata.pipelines.recipe",
    "fit_fast_from_recipe": "kidata.pipelines.stats_pass",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
