"""What a training step holds for its backward pass, counted without running it: the model's
forward on fake tensors (``FakeTensorMode``: shapes, dtypes and the kernels the CPU would pick,
no memory), every tensor autograd saves recorded once by storage. This is the activation term of
``kidata model memory``: it follows the code as it is (attention masks, the logits, what a LoRA
adapter keeps), for any preset, in seconds.

Under activation checkpointing a layer keeps only its inputs until backward recomputes it, so the
step holds the inputs of every layer, what lies outside the layers, and one layer's activations at
a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from kidata.model.config import ModelConfig
from kidata.model.ki_model import KIModel
from kidata.model.lora import store_frozen_in_bf16


@dataclass(frozen=True)
class ActivationTrace:
    """Bytes autograd saves in one forward pass of one batch."""

    outside_layers: int  # vision tower, embeddings, heads, logits and losses
    per_layer: tuple[int, ...]  # each decoder+expert layer pair
    layer_inputs: int  # the hidden states entering all the layer pairs (what checkpointing keeps)
    largest: int  # the largest saved tensor: its gradient is whole beside everything saved (the logits')

    def total(self, checkpointing: bool) -> int:
        """Peak bytes of the step's activations: what is saved, plus the gradient of the largest
        saved tensor while backward passes through it."""
        if checkpointing:
            return self.outside_layers + self.layer_inputs + max(self.per_layer, default=0) + self.largest
        return self.outside_layers + sum(self.per_layer) + self.largest


def fake_batch(config: ModelConfig, batch: int, tokens: int, cameras: int) -> dict[str, torch.Tensor]:
    """A training batch of the model's shapes: ``cameras`` images, ``tokens`` text tokens (the
    first half prefix, the rest causal), a full action chunk and state. Every mask is all true,
    the loss mask too: the logits are counted at every text position (their upper bound), which is
    also what lets the trace size a boolean selection without its values."""
    b, h, a = batch, config.action_horizon, config.action_dim
    ar = torch.zeros(b, tokens, dtype=torch.bool)
    ar[:, tokens // 2:] = True
    return {"images": torch.zeros(b, cameras, 3, config.image_size, config.image_size),
            "image_mask": torch.ones(b, cameras, dtype=torch.bool),
            "tokens": torch.zeros(b, tokens, dtype=torch.long), "token_mask": torch.ones(b, tokens, dtype=torch.bool),
            "ar": ar, "loss": torch.ones(b, tokens, dtype=torch.bool), "actions": torch.zeros(b, h, a),
            "action_valid": torch.ones(b, h, dtype=torch.bool), "action_dim_mask": torch.ones(b, a, dtype=torch.bool),
            "has_actions": torch.ones(b, dtype=torch.bool), "state": torch.zeros(b, config.state_dim),
            "state_dim_mask": torch.ones(b, config.state_dim, dtype=torch.bool)}


@contextlib.contextmanager
def _every_mask_element_true():
    """Fake tensors hold no values, so a boolean selection (``x[mask]``, ``nonzero``) has no size
    for them; here it takes every element, which is exact for ``fake_batch``'s all-true masks."""
    from torch._subclasses import fake_impls

    table = fake_impls.op_implementations_dict
    op = torch.ops.aten.nonzero.default
    original = table.get(op)
    table[op] = lambda mode, func, mask: mask.new_empty((mask.numel(), mask.dim()), dtype=torch.int64)
    try:
        yield
    finally:
        if original is None:
            table.pop(op, None)
        else:
            table[op] = original


def trace_activations(config: ModelConfig, *, batch: int, tokens: int, cameras: int, bf16: bool = False,
                      frozen_bf16: bool = False) -> ActivationTrace:
    """The saved-for-backward bytes of one forward of ``batch`` samples (fp32, or under bf16
    autocast), by where they are saved; ``frozen_bf16``: with frozen linear weights stored in bf16
    (``train.frozen_weights``), which autocast then saves as they are instead of as new casts."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), _every_mask_element_true():
        torch.manual_seed(0)
        model = KIModel(config).train()
        if frozen_bf16:
            store_frozen_in_bf16(model)
        inputs = fake_batch(config, batch, tokens, cameras)
        noise, t = torch.zeros_like(inputs["actions"]), torch.full((batch,), 0.5)
        weights = {p.untyped_storage()._cdata for p in model.parameters()}
        saved: dict[int, tuple[int, int]] = {}  # storage -> (bytes, layer index or -1)
        current = [-1]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage._cdata not in weights and storage._cdata not in saved:
                saved[storage._cdata] = (storage.nbytes(), current[0])
            return tensor

        joint_layer = model._joint_layer
        inputs_bytes = [0]

        def counted_layer(index, h, e, *rest):
            current[0] = index
            inputs_bytes[0] += h.numel() * h.element_size() + (e.numel() * e.element_size() if e is not None else 0)
            try:
                return joint_layer(index, h, e, *rest)
            finally:
                current[0] = -1

        model._joint_layer = counted_layer
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
            model(inputs, noise=noise, t=t)
    per_layer = [0] * config.depth
    outside = 0
    for size, layer in saved.values():
        if layer < 0:
            outside += size
        else:
            per_layer[layer] += size
    largest = max((size for size, _ in saved.values()), default=0)
    return ActivationTrace(outside, tuple(per_layer), inputs_bytes[0], largest)
