"""How many bytes a training run holds per GPU for its weights, gradients, AdamW moments and weight
EMA, before activations: the arithmetic behind the README's memory model.

Two settings:

* ``current``: the trainer before per-block units (kept for comparison). fp32 master weights,
  gradients and AdamW moments (2 x fp32) sharded by FSDP2 over the ranks, the whole model as
  **one** FSDP unit (its full fp32 weights gathered for the step), and the weight EMA as a full
  fp32 copy on every rank.
* ``per_block``: the trainer now. The same sharded fp32 state plus a sharded EMA; FSDP2 units per
  transformer block with ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``, so only
  bf16 copies of the block being computed and the one prefetched are whole at a time.

Activations are not counted: they depend on batch, sequence length and activation checkpointing
(the README says what each adds).
"""

from __future__ import annotations

from dataclasses import dataclass

FP32, BF16 = 4, 2
SETTINGS = ("current", "per_block")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU, by what holds them."""

    weights: float  # fp32 master weights (the rank's shard)
    gradients: float
    adam: float  # exp_avg + exp_avg_sq
    ema: float
    gathered: float  # whole (unsharded) weights materialized during the step

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.adam + self.ema + self.gathered


def estimate(total_params: int, trainable_params: int, largest_block_params: int, gpus: int, setting: str,
             *, ema: bool = True) -> MemoryEstimate:
    """Per-GPU bytes for a model of ``total_params`` (``trainable_params`` with gradients, AdamW and
    EMA) on ``gpus`` ranks. ``largest_block_params`` sizes the per-block FSDP unit."""
    if setting not in SETTINGS:
        raise ValueError(f"memory setting {setting!r}: choose one of {SETTINGS}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    shard = 1.0 / gpus
    weights = FP32 * total_params * shard
    gradients = FP32 * trainable_params * shard
    adam = 2 * FP32 * trainable_params * shard
    if setting == "current":
        ema_bytes = FP32 * trainable_params if ema else 0.0
        gathered = FP32 * total_params if gpus > 1 else 0.0  # one unit: every weight whole at once
    else:
        ema_bytes = FP32 * trainable_params * shard if ema else 0.0
        # bf16 copies of the block in compute + the one prefetched (one GPU: nothing is sharded)
        gathered = 2 * BF16 * largest_block_params if gpus > 1 else 0.0
    return MemoryEstimate(weights, gradients, adam, ema_bytes, gathered)


def preset_sizes(model_config) -> tuple[int, int, int]:
    """(total, trainable, largest FSDP unit) parameter counts of a model config, on the meta device.
    The largest unit is a backbone + expert layer pair or the embedding, whichever is bigger."""
    import torch

    from kidata.model.ki_model import KIModel

    with torch.device("meta"):
        model = KIModel(model_config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    pairs = [count(layer) + (count(model.expert_layers[i]) if model.config.has_expert else 0)
             for i, layer in enumerate(model.layers)]
    units = pairs + [count(block) for block in model.vision.blocks] + [count(model.embed)]
    return total, trainable, max(units)
