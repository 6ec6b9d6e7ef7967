"""Model configuration: a frozen dataclass loaded from TOML presets (shipped: the top-level
``model/*.toml``, resolved by ``kidata.assets``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("ki", "joint", "pi0", "pi0_fast", "frozen", "hybrid", "vlm")
ACTION_TOKENS = ("fast", "bins")  # the discrete objective the manifest's action tokenizer must match
STATE_INPUTS = ("tokens", "prefix", "expert")
TIME_CONDITIONINGS = ("adarms", "concat")


@dataclass(frozen=True)
class ModelConfig:
    """Widths and depths of the three parts, the action space, and which recipe to train.

    variant (the paper's comparisons, section 6):
      ``ki``       FAST cross-entropy + flow; expert reads the backbone through a stop-gradient.
      ``joint``    same losses, gradients of the flow loss flow into the backbone.
      ``pi0``      flow only, gradients into the backbone, no token loss.
      ``pi0_fast`` token loss only, no expert (actions decoded autoregressively at inference).
      ``frozen``   backbone frozen (no gradients, not trained), expert trained on the flow loss.
      ``hybrid``   as ``joint``, and target tokens also attend to the noisy actions (HybridVLA).
      ``vlm``      the backbone alone on a VLM-only mixture (token loss, no expert): a pretrained
                   backbone for any variant (``train.init_format = "kidata"``).
    action_tokens: ``fast`` or ``bins`` (naive / strided bins): checked against the manifest.
    state_input: ``tokens`` (state is in the text, discrete), ``prefix`` (a learned projection of
      the continuous state as one prefix token), ``expert`` (pi0: a state token heading the
      expert stream).
    time_conditioning: ``adarms`` (pi0.5: adaptive RMSNorm in every expert layer) or ``concat``
      (pi0: an MLP of [action embedding, time embedding]).
    """

    # vision encoder (SigLIP-style ViT) and projector
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_heads: int = 16
    vision_mlp: int = 4304
    # () = SigLIP's patch embedding (one linear map per patch; what pretrained towers load into).
    # (8, 16, 32) = a convolutional stem: 3x3 stride-2 convolutions of those channels, then one
    # convolution to vision_width over the rest of each patch (Xiao et al. 2021, "Early convolutions
    # help transformers see"), for towers trained from scratch that must find small objects.
    vision_stem: tuple[int, ...] = ()
    # backbone decoder (Gemma-style)
    vocab_size: int = 257152
    width: int = 2048
    depth: int = 18
    heads: int = 8
    kv_heads: int = 1
    head_dim: int = 256
    mlp: int = 16384
    # action expert: same depth, heads and head_dim, its own width
    expert_width: int = 1024
    expert_mlp: int = 4096
    # actions
    action_dim: int = 32
    action_horizon: int = 10
    state_dim: int = 32
    state_input: str = "tokens"
    time_conditioning: str = "adarms"
    # training recipe
    variant: str = "ki"
    action_tokens: str = "fast"
    flow_weight: float = 1.0  # alpha of the paper's combined loss
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for name, allowed in (("variant", VARIANTS), ("action_tokens", ACTION_TOKENS),
                              ("state_input", STATE_INPUTS), ("time_conditioning", TIME_CONDITIONINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.has_expert and self.state_input == "expert":
            raise ValueError(f"state_input='expert' needs an expert; {self.variant} has none")
        stride = 2 ** len(self.vision_stem)
        if self.vision_stem and (self.patch_size % stride or min(self.vision_stem) < 1):
            raise ValueError(f"vision_stem {list(self.vision_stem)} halves the image {len(self.vision_stem)} times "
                             f"(stride {stride}), which must divide patch_size {self.patch_size}, with channels >= 1")
        if self.width % self.heads or self.heads % self.kv_heads:
            raise ValueError("heads must divide width and kv_heads must divide heads")

    @property
    def stop_gradient(self) -> bool:
        return self.variant == "ki"

    @property
    def has_expert(self) -> bool:
        return self.variant not in ("pi0_fast", "vlm")

    @property
    def fast_loss(self) -> bool:
        """The token cross-entropy is part of the training loss."""
        return self.variant in ("ki", "joint", "pi0_fast", "hybrid", "vlm")

    @property
    def backbone_frozen(self) -> bool:
        return self.variant == "frozen"

    @property
    def targets_see_actions(self) -> bool:
        return self.variant == "hybrid"

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "ModelConfig":
        """The ``[model]`` table of a preset (or a file holding only model keys), with overrides."""
        from kidata.config import from_table, read_toml

        data, found = read_toml(path, kind="model")
        return from_table(cls, {**data.get("model", data), **overrides}, f"{found}: ", section="model.")
