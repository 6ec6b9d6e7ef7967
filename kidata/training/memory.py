"""How many bytes a training run holds per GPU for its weights, gradients, AdamW moments, weight
EMA and activations: the arithmetic behind ``kidata model memory`` and the README's memory model.

Two settings:

* ``current``: the trainer before per-block units (kept for comparison). fp32 master weights,
  gradients and AdamW moments (2 x fp32) sharded by FSDP2 over the ranks, the whole model as
  **one** FSDP unit (its full fp32 weights gathered for the step), and the weight EMA as a full
  fp32 copy on every rank.
* ``per_block``: the trainer now. The same sharded fp32 state plus a sharded EMA; FSDP2 units per
  transformer block with ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``, so only
  bf16 copies of the block being computed and the one prefetched are whole at a time.

``estimate`` counts the model's state alone; ``plan`` adds what a step of a given batch holds:
autocast's bf16 weight copies and the activations autograd saves (traced, ``activations``). A LoRA
config counts its frozen base weights in ``parameters`` and only the trained ones elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def frozen_linear_params(model_config) -> int:
    """How many frozen parameters of a model config ``train.frozen_weights = "bf16"`` stores in
    bf16 (the frozen weights and biases of its linear and convolution layers), on the meta device."""
    import torch

    from kidata.model.ki_model import KIModel
    from kidata.model.lora import store_frozen_in_bf16

    with torch.device("meta"):
        model = KIModel(model_config)
    store_frozen_in_bf16(model)
    return sum(p.numel() for p in model.parameters() if p.dtype == torch.bfloat16)


CARDS_GIB = (24, 40, 80, 141)  # RTX 4090 / L4-class, A100 40 GB, A100 / H100 80 GB, H200
CUDA_CONTEXT_GIB = 1.0  # what the CUDA context and allocator take before the first tensor


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of a training step, by what holds them (``kidata model memory``)."""

    parameters: float  # fp32 master weights (this rank's shard), frozen ones included (bf16 with frozen_bf16)
    gradients: float
    optimizer: float  # AdamW exp_avg + exp_avg_sq
    ema: float
    copies: float  # bf16 weights whole at once: FSDP2's gathered blocks, or autocast's cached casts
    activations: float  # what autograd saves for backward (kidata.training.activations)

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.ema + self.copies + self.activations

    def fits(self, card_gib: float) -> bool:
        return self.total <= (card_gib - CUDA_CONTEXT_GIB) * 2**30


def plan(model_config, *, batch: int, gpus: int = 1, checkpointing: bool = False, tokens: int = 200,
         cameras: int = 3, bf16: bool = True, ema: bool = False, frozen_bf16: bool = False) -> MemoryPlan:
    """Per-GPU bytes of training ``model_config`` on a global ``batch`` split over ``gpus`` FSDP2
    ranks (one GPU: nothing sharded): ``estimate``'s ``per_block`` state, autocast's bf16 copies of
    the trained weights on one GPU, and the traced activations of the rank's share of the batch.
    ``frozen_bf16`` (``train.frozen_weights = "bf16"``, bf16 runs): the frozen linear weights
    take 2 bytes each."""
    from kidata.training.activations import trace_activations

    if frozen_bf16 and not bf16:
        raise ValueError("frozen weights stored in bf16 need bf16 autocast; this plan is for fp32 (drop one of them)")
    total, trainable, block = preset_sizes(model_config)
    state = estimate(total, trainable, block, gpus, "per_block", ema=ema)
    if frozen_bf16:
        state = replace(state, weights=state.weights - (FP32 - BF16) * frozen_linear_params(model_config) / gpus)
    # one GPU under autocast: the bf16 cast of every weight that trains is cached for the step
    copies = state.gathered if gpus > 1 else (BF16 * trainable if bf16 else 0.0)
    per_gpu = -(-batch // gpus)
    trace = trace_activations(model_config, batch=per_gpu, tokens=tokens, cameras=cameras, bf16=bf16,
                              frozen_bf16=frozen_bf16)
    return MemoryPlan(state.weights, state.gradients, state.adam, state.ema, copies, trace.total(checkpointing))
