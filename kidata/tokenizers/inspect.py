"""Human-readable view of a Sample: text pieces, the prefix/postfix boundary, loss tokens, the
action span decoded back to actions, and the state bins."""

from __future__ import annotations

import re

import numpy as np

from kidata.schema import Sample
from kidata.tokenizers.prompt import SampleEncoder


def describe_sample(sample: Sample, encoder: SampleEncoder) -> str:
    """Prefix pieces plain, postfix pieces in [brackets] when they carry loss, "||" at the boundary;
    the action span is shown as one block and decoded."""
    text = encoder.text
    pieces = []
    span = sample.fast_span or (-1, -1)
    for index, token in enumerate(sample.tokens.tolist()):
        if index == sample.prefix_length:
            pieces.append(" || ")
        if sample.state_slot is not None and index == sample.state_slot:
            pieces.append("<STATE>")
        if index == span[0]:
            pieces.append(f"[<{span[1] - span[0]} action tokens {token}..{sample.tokens[span[1] - 1]}>]")
        if span[0] <= index < span[1]:
            continue
        piece = text.id_to_piece(token)
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):  # SentencePiece byte fallback
            piece = chr(int(piece[3:5], 16))
        piece = piece.replace("▁", " ").replace("\n", "\\n")
        pieces.append(f"[{piece}]" if sample.loss[index] else piece)
    if sample.state_slot is not None and sample.state_slot == len(sample.tokens):
        pieces.append("<STATE>")
    lines = [
        f"{sample.kind} sample: {len(sample)} tokens, prefix {sample.prefix_length}, "
        f"loss on {int(sample.loss.sum())}, has_actions {sample.has_actions}",
        "".join(pieces),
    ]
    if sample.state is not None:
        lines.append(f"state (normalized): {np.round(sample.state.astype(np.float64), 3).tolist()}")
        lines.append(f"state bins: {encoder.state_bins(sample).tolist()}")
    if sample.fast_span is not None and sample.actions is not None:
        horizon, dim = sample.actions.shape
        full_dim = getattr(encoder.actions, "action_dim", None) or dim  # chunks were padded to it
        decoded, ok = encoder.actions.decode([encoder.action_tokens_of(sample)], horizon=horizon, dim=full_dim)
        decoded = decoded[:, :, :dim]
        error = float(np.abs(decoded[0] - sample.actions).max())
        lines.append(f"action span {sample.fast_span}: decodes ok={bool(ok[0])}, max abs error vs chunk {error:.4f}")
        lines.append(f"decoded first step: {np.round(decoded[0, 0], 3).tolist()}")
    return "\n".join(lines)
