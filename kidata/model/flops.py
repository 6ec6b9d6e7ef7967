"""Training FLOPs of one step, counted per part: each token is charged only for the weights it
passes through (MFU's numerator; Chowdhery et al. 2022, appendix B: 6 FLOPs per parameter and
token for forward + backward, plus attention's score and weighted-sum matmuls).

* vision: every image token through SigLIP and the projector;
* backbone: every prefix/text token (image tokens included) through the Gemma decoder layers;
* lm_head: the tied-embedding matmul, only at the positions that predict a loss-masked target;
* expert: the action tokens (and a pi0 state token) through the expert's layers and heads;
* attention: q k^T and attention-weights @ v of each stream over the keys it is given (SDPA
  computes every masked entry too, so the dense rectangle counts).

Charging every token with every parameter (6 x total x tokens) overstates a KI step ~1.4x at 2B.
"""

from __future__ import annotations

from dataclasses import dataclass

from kidata.model.config import ModelConfig

TRAIN_FLOPS_PER_MAC = 6  # forward (2) + backward (4) per multiply-accumulate


@dataclass(frozen=True)
class StepShape:
    """What a step feeds the model: ``batch`` rows of ``cameras`` images, ``text`` text tokens per
    row of which ``loss_tokens`` are loss-masked targets (0: no token loss), ``actions`` expert rows."""

    batch: int
    cameras: int
    text: int
    loss_tokens: int
    actions: bool = True


def training_flops(config: ModelConfig, shape: StepShape) -> dict[str, float]:
    """FLOPs of one forward + backward per part (keys as the module docstring), and ``total``."""
    from kidata.model.weights import parameter_counts

    counts = parameter_counts(config)
    c, b = config, shape.batch
    patches = (c.image_size // c.patch_size) ** 2
    image_tokens = b * shape.cameras * patches
    state_token = 1 if c.state_input == "prefix" else 0
    prefix = shape.cameras * patches + state_token + shape.text  # backbone tokens per row
    parts = {
        "vision": TRAIN_FLOPS_PER_MAC * (counts["vision"] + counts["projector"]) * image_tokens,
        "backbone": TRAIN_FLOPS_PER_MAC * counts["decoder"] * b * prefix,
        "lm_head": TRAIN_FLOPS_PER_MAC * c.width * c.vocab_size * b * shape.loss_tokens,
    }
    head = c.heads * c.head_dim
    vision_attention = 2 * 2 * c.vision_width * patches * patches * b * shape.cameras * c.vision_depth
    keys = prefix
    expert = 0
    if c.has_expert and shape.actions:
        expert = c.action_horizon + (1 if c.state_input == "expert" else 0)
        parts["expert"] = TRAIN_FLOPS_PER_MAC * counts["expert"] * b * expert
        if c.targets_see_actions:
            keys += expert
    backbone_attention = 2 * 2 * head * prefix * keys * b * c.depth
    expert_attention = 2 * 2 * head * expert * (prefix + expert) * b * c.depth
    parts["attention"] = 3 * (vision_attention + backbone_attention + expert_attention)
    parts["total"] = sum(parts.values())
    return {name: float(value) for name, value in parts.items()}


def naive_training_flops(config: ModelConfig, shape: StepShape) -> float:
    """6 x all parameters x all tokens: the count that charges image and action tokens with the
    decoder and the expert alike (for comparison only)."""
    from kidata.model.weights import parameter_counts

    patches = (config.image_size // config.patch_size) ** 2
    tokens = shape.batch * (shape.cameras * patches + shape.text + (config.action_horizon if shape.actions else 0))
    return float(TRAIN_FLOPS_PER_MAC * parameter_counts(config)["total"] * tokens)
