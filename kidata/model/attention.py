"""Attention as the KI model runs it: one additive bias per mask (built once per forward pass and
shared by every layer), and grouped keys/values that are never copied once per query head.

Keys and values of Gemma 2B have one head for eight query heads. Repeating them 8x
(``repeat_interleave``) materializes eight copies per layer and keeps them for backward. Instead:

* one key/value head (multi-query, every shipped preset): the head is broadcast to the query heads
  as a zero-stride view (``expand``: no copy). The tensors SDPA sees have equal head counts, so
  every fused CUDA kernel that takes an additive mask (memory-efficient, cuDNN) stays eligible.
* several key/value heads: SDPA's ``enable_gqa`` (torch >= 2.5; kidata needs >= 2.6), which maps
  each query head to its group without a copy in the kernels that implement it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _MaskValues(dict):
    """dtype -> the additive bias of a masked key: 0.7 of the dtype's lowest value (openpi's choice
    for float32), low enough to vanish in the softmax, far enough from -inf not to overflow."""

    def __missing__(self, dtype: torch.dtype) -> float:
        self[dtype] = 0.7 * torch.finfo(dtype).min
        return self[dtype]


MASK_VALUE = _MaskValues()


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype attention's queries will have: autocast's when it is on for ``reference``'s
    device, else ``reference``'s own (the embeddings, which follow the parameters' dtype)."""
    device = reference.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return reference.dtype


def attention_bias(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, Lq, Lk] (True: query i sees key j) -> additive bias [B, 1, Lq, Lk] of ``dtype``.

    A finite bias, as openpi's (-2.38e38 in float32): a padded row that sees nothing gets uniform
    weights, not NaN (torch < 2.5 turned an all-False boolean row into NaN, which then spread).
    Called once per mask and forward pass; every layer reuses the result."""
    bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return bias.masked_fill(~visible, MASK_VALUE[dtype])[:, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention of q [B, heads, Lq, hd] over k, v [B, kv_heads, Lk, hd]
    (kv_heads divides heads) under ``bias`` [B, 1, Lq, Lk]; returns [B, Lq, heads * hd]."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if bias.dtype != q.dtype:  # only when the queries' dtype differs from the one the bias was built in
        bias = bias.to(q.dtype)
    if kv_heads == heads:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    elif kv_heads == 1:  # multi-query: broadcast the one head as a view (stride 0), no copy
        shape = (k.shape[0], heads, k.shape[2], k.shape[3])
        out = F.scaled_dot_product_attention(q, k.expand(shape), v.expand(shape), attn_mask=bias)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    return out.transpose(1, 2).flatten(2)
