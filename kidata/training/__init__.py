"""Training a model on a built mixture: ``TrainConfig`` presets and ``train`` (closed-loop evaluation
during training is a hook its caller hands in, called with the ``LiveWeights``)."""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "TrainConfig": "kidata.training.config",
    "train": "kidata.training.trainer",
    "latest_checkpoint": "kidata.training.checkpoint",
    "LiveWeights": "kidata.training.closed_loop",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
