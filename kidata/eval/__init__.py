"""Closed-loop evaluation of policies and the diagnostics that find what stops them."""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "evaluate_metaworld": "kidata.eval.metaworld",
    "SceneSettings": "kidata.eval.metaworld",
    "ExpertPolicy": "kidata.eval.metaworld",
    "RandomPolicy": "kidata.eval.metaworld",
    "check_parity": "kidata.eval.parity",
    "Chunking": "kidata.eval.chunking",
    "closed_loop_hook": "kidata.eval.during_training",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
