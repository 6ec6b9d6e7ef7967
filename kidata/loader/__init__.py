"""A built mixture as a resumable torch dataset, and batches for the model (``kidata.loader.collate.collate``:
the function shares its module's name, so it is imported from the module)."""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "MixtureDataset": "kidata.loader.mixture",
    "MixtureSettings": "kidata.loader.mixture",
    "Augment": "kidata.loader.collate",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
