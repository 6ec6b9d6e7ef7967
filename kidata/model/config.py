"""Model configuration: a frozen dataclass loaded from TOML presets (shipped: the top-level
``model/*.toml``, resolved by ``kidata.assets``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from kidata.choices import ActionTokens, StateInput, TimeConditioning, Variant
from kidata.config import choices, field_choices

VARIANTS = choices(Variant)
LORA_ATTENTION_TARGETS = ("q", "k", "v", "o")
LORA_TARGETS = LORA_ATTENTION_TARGETS + ("gate", "up", "down")  # attention, then the MLP


@dataclass(frozen=True)
class LoraConfig:
    """``[model] lora = { ... }``. Ranks as openpi's defaults: 16 on the backbone decoder, 32 on the
    action expert; a rank of 0 leaves that stream without adapters and trains it in full (openpi's
    non-LoRA expert). ``alpha``: the adapters' output is scaled by ``alpha / rank``; 0 means each
    stream's own rank (scale 1, openpi's ``alpha = rank``). ``targets``: projections adapted in
    every layer, among q, k, v, o (attention) and gate, up, down (MLP). ``train_vision``: the vision
    tower and projector train in full (openpi trains them; off by default, which halves the
    trained parameters of a 2B model and keeps the tower's pretrained features). ``train_heads``:
    the expert's action and time projections and a state projection train in full (openpi does:
    they have no pretrained counterpart in a VLM checkpoint); false leaves the adapters alone
    trainable."""

    backbone_rank: int = 16
    expert_rank: int = 32
    alpha: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS
    train_vision: bool = False
    train_heads: bool = True

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"model.lora.targets {list(self.targets)}: choose among {list(LORA_TARGETS)}")
        if self.backbone_rank < 0 or self.expert_rank < 0 or self.alpha < 0:
            raise ValueError(f"model.lora ranks and alpha must be >= 0, got backbone_rank {self.backbone_rank}, "
                             f"expert_rank {self.expert_rank}, alpha {self.alpha}")

    def scale(self, rank: int) -> float:
        """The factor on ``B @ A`` for adapters of ``rank``."""
        return (self.alpha or rank) / rank


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
    lora: ``LoraConfig`` (``kidata.model.lora``): adapters train, base weights stay frozen.
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
    state_input: StateInput = "tokens"
    time_conditioning: TimeConditioning = "adarms"
    # training recipe
    variant: Variant = "ki"
    action_tokens: ActionTokens = "fast"
    flow_weight: float = 1.0  # alpha of the paper's combined loss
    rope_theta: float = 10000.0
    # low-rank adapters on frozen base weights (fine-tuning a pretrained checkpoint); None: full training
    lora: LoraConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lora, Mapping):  # a TOML table, an override or config.json
            from kidata.config import from_table

            object.__setattr__(self, "lora", from_table(LoraConfig, self.lora, "", section="model.lora."))
        elif self.lora is not None and not isinstance(self.lora, LoraConfig):
            raise ValueError(f"model.lora must be a table such as {{ backbone_rank = 16, expert_rank = 32 }}, "
                             f"got {self.lora!r}")
        for name, (allowed, _) in field_choices(ModelConfig).items():  # its Literal fields
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
