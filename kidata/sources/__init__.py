"""Readers that yield robot episodes or VLM examples, and the registry that names them."""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "open_source": "kidata.sources.registry",
    "lookup": "kidata.sources.registry",
    "register_reader": "kidata.sources.registry",
    "register_dataset": "kidata.sources.registry",
    "make_spec": "kidata.sources.spec",
    "spec_from_mapping": "kidata.sources.spec",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
