"""Batches for the model: padded token streams, masked cameras, padded state and actions.

``collate(samples, max_tokens=..., action_dim=..., action_horizon=..., state_dim=..., cameras=...)``
returns a ``kidata.schema.Batch`` of torch tensors (the table of keys, shapes and dtypes is there).

Mixed robot + VLM batches work: VLM rows have no state, actions or action mask. ``prefix_only``,
``expert_prompt`` and ``generation_prompt`` cut a batch where inference starts (what a policy feeds
the model), for the held-out evaluation and the parity check.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from kidata.progress import note
from kidata.schema import VLM_TASKS, Batch
from kidata.tokenizers.prompt import expert_context_length

DEFAULT_CAMERAS = ("base_0", "base_1", "left_wrist_0", "right_wrist_0")
_NOTED_CAMERAS: set[tuple[str, ...]] = set()


def collate(samples: Sequence[dict], *, max_tokens: int, action_dim: int, action_horizon: int, state_dim: int,
            cameras: Sequence[str] = DEFAULT_CAMERAS, image_size: int | None = None, trim_padding: bool = False) -> Batch:
    """``trim_padding``: cut the token columns that are padding in every row (``trim_token_padding``),
    here on the host where it costs no device synchronization (the trainer's batches)."""
    batch = len(samples)
    dropped = sorted({camera for s in samples for camera in s["images"]} - set(cameras))
    if dropped and tuple(dropped) not in _NOTED_CAMERAS:  # one line per process, above any progress bar
        _NOTED_CAMERAS.add(tuple(dropped))
        note(f"kidata: images of camera(s) {dropped} are in the mixture but not read: the model reads {list(cameras)} "
             "(--data.cameras, or data.cameras in the preset)")
    if image_size is None:
        # numpy images are [S, S, 3] (decoded), tensors [3, S, S] (augmented)
        image_size = next((img.shape[-1] if torch.is_tensor(img) else img.shape[0]
                           for s in samples for img in s["images"].values()), 224)
    images = torch.zeros(batch, len(cameras), 3, image_size, image_size)
    image_mask = torch.zeros(batch, len(cameras), dtype=torch.bool)
    tokens = torch.zeros(batch, max_tokens, dtype=torch.int64)
    ar = torch.zeros(batch, max_tokens, dtype=torch.bool)
    loss = torch.zeros(batch, max_tokens, dtype=torch.bool)
    token_mask = torch.zeros(batch, max_tokens, dtype=torch.bool)
    prefix_length = torch.zeros(batch, dtype=torch.int64)
    expert_context = torch.zeros(batch, dtype=torch.int64)
    state = torch.zeros(batch, state_dim)
    state_dim_mask = torch.zeros(batch, state_dim, dtype=torch.bool)
    actions = torch.zeros(batch, action_horizon, action_dim)
    action_valid = torch.zeros(batch, action_horizon, dtype=torch.bool)
    action_dim_mask = torch.zeros(batch, action_dim, dtype=torch.bool)
    has_actions = torch.zeros(batch, dtype=torch.bool)
    source_index = torch.zeros(batch, dtype=torch.int64)
    vlm_task = torch.zeros(batch, dtype=torch.int64)  # 0 robot (or unknown), else 1 + VLM_TASKS.index
    for row, sample in enumerate(samples):
        length = len(sample["tokens"])
        if length > max_tokens:
            raise ValueError(f"sample {sample.get('__key__')} has {length} tokens > max_tokens {max_tokens}")
        tokens[row, :length] = torch.from_numpy(sample["tokens"].astype(np.int64))
        ar[row, :length] = torch.from_numpy(sample["ar"])
        loss[row, :length] = torch.from_numpy(sample["loss"])
        token_mask[row, :length] = True
        prefix_length[row] = sample["meta"]["prefix_length"]
        expert_context[row] = expert_context_length(sample["meta"])
        for column, camera in enumerate(cameras):
            image = sample["images"].get(camera)
            if image is None:
                continue
            if not torch.is_tensor(image):
                image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
            images[row, column] = image
            image_mask[row, column] = True
        if sample.get("state") is not None:
            values = torch.from_numpy(sample["state"].astype(np.float32))[:state_dim]
            state[row, : len(values)] = values
            state_dim_mask[row, : len(values)] = True
        if sample.get("actions") is not None:
            chunk = torch.from_numpy(sample["actions"].astype(np.float32))
            horizon, dims = min(chunk.shape[0], action_horizon), min(chunk.shape[1], action_dim)
            actions[row, :horizon, :dims] = chunk[:horizon, :dims]
            action_valid[row, :horizon] = torch.from_numpy(sample["action_valid"][:horizon])
            action_dim_mask[row, :dims] = True
            has_actions[row] = bool(sample["meta"].get("has_actions", True))
        source_index[row] = sample["source_index"]
        kind = sample["meta"].get("kind")
        vlm_task[row] = VLM_TASKS.index(kind) + 1 if kind in VLM_TASKS else 0
    out = {"images": images, "image_mask": image_mask, "tokens": tokens, "ar": ar, "loss": loss,
           "token_mask": token_mask, "prefix_length": prefix_length, "expert_context": expert_context,
           "state": state, "state_dim_mask": state_dim_mask,
           "actions": actions, "action_valid": action_valid, "action_dim_mask": action_dim_mask,
           "has_actions": has_actions, "source_index": source_index, "vlm_task": vlm_task}
    return with_loss_targets(trim_token_padding(out)) if trim_padding else out


def with_loss_targets(batch: Batch) -> Batch:
    """The batch with ``loss_targets``: int64 [N], the flat indices (into [B, L - 1]) of the positions
    whose next token carries loss, found here on the host. The model then picks its N logit rows with
    a gather of known size instead of a boolean mask, which on a GPU waits for the device to count
    them (twice per micro-batch). Valid only for the batch as returned: rows cut or reordered later
    need it recomputed."""
    targets = torch.nonzero(batch["loss"][:, 1:].reshape(-1)).reshape(-1)
    return {**batch, "loss_targets": targets}


TOKEN_KEYS = ("tokens", "ar", "loss", "token_mask")  # the Batch keys of shape [B, L]


def trim_token_padding(batch: Batch) -> Batch:
    """The batch with its [B, L] token columns cut to its longest row (collate pads every row to
    the mixture's max_tokens). Only columns that are padding in every row are cut:
    each real token keeps its position, mask and loss, and padded keys carry no attention weight,
    so the model's outputs for real tokens are the same. Why: Meta-World rows hold 27 tokens on
    average (38 at most) of max_tokens 80, and attention and the token logits cost per column
    (benchmarks/padding_bench.py, docs/results/metaworld.md)."""
    used = torch.nonzero(batch["token_mask"].any(dim=0))
    keep = int(used.max()) + 1 if len(used) else 1  # the last column any row uses (one, for an empty batch)
    if keep == batch["token_mask"].shape[1]:
        return batch
    return {**batch, **{key: batch[key][:, :keep] for key in TOKEN_KEYS}}


class Augment:
    """openpi-style training augmentation, seeded per sample: random crop to 95% and resize back
    plus a small rotation (non-wrist cameras), colour jitter (brightness, contrast, saturation) on
    all cameras. Returns float32 [3, S, S] in [-1, 1]. Each strength at 0 (``crop`` at 1) turns
    that transform off: ``[data] augment`` takes a table of them (``from_setting``)."""

    def __init__(self, crop: float = 0.95, degrees: float = 5.0, brightness: float = 0.3, contrast: float = 0.4,
                 saturation: float = 0.5) -> None:
        if not 0 < crop <= 1:  # also refuses NaN
            raise ValueError(f"augment crop must be in (0, 1] (the kept fraction of the image side), got {crop}")
        for name, value in (("degrees", degrees), ("brightness", brightness), ("contrast", contrast),
                            ("saturation", saturation)):
            if not 0 <= value < math.inf:  # also refuses NaN
                raise ValueError(f"augment {name} must be finite and >= 0 (0 turns it off), got {value}")
        self.crop, self.degrees = crop, degrees
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @classmethod
    def from_setting(cls, setting: bool | Mapping[str, float]) -> "Augment | None":
        """``[data] augment``: true (the strengths above), false (none), or a table overriding some
        of them (``{ degrees = 0.0 }``)."""
        if isinstance(setting, Mapping):
            return cls(**setting)
        return cls() if setting else None

    def __call__(self, camera: str, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        size = tensor.shape[-1]
        if "wrist" not in camera and (self.crop < 1 or self.degrees > 0):
            tensor = self._crop_rotate(tensor, size, rng)
        tensor = self._jitter(tensor, rng)
        return tensor.clamp(0, 1) * 2.0 - 1.0

    def _crop_rotate(self, tensor: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
        import torch.nn.functional as F

        scale = self.crop
        shift_x, shift_y = (rng.uniform(-(1 - scale), 1 - scale, 2)).tolist()
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        theta = torch.tensor([[cos, -sin, shift_x], [sin, cos, shift_y]], dtype=torch.float32)[None]
        grid = F.affine_grid(theta, (1, 3, size, size), align_corners=False)
        return F.grid_sample(tensor[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]

    def _jitter(self, tensor: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        brightness = 1 + rng.uniform(-self.brightness, self.brightness)
        contrast = 1 + rng.uniform(-self.contrast, self.contrast)
        saturation = 1 + rng.uniform(-self.saturation, self.saturation)
        tensor = tensor * brightness
        mean = tensor.mean()
        tensor = (tensor - mean) * contrast + mean
        gray = (0.299 * tensor[0] + 0.587 * tensor[1] + 0.114 * tensor[2])[None]
        return (tensor - gray) * saturation + gray


# Batches cut where inference starts: the held-out evaluation and the parity check feed the model
# what a policy would, from a training batch.

def _cut(batch: Mapping[str, torch.Tensor], stops: torch.Tensor, *, keep_causal: bool) -> dict[str, torch.Tensor]:
    """The batch with each row's tokens from ``stops`` [B] on turned into padding, no loss; the
    causal flags of what is kept stay (``keep_causal``) or are cleared."""
    tokens = batch["tokens"]
    positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
    keep = batch["token_mask"] & (positions < stops[:, None])
    return {**batch, "token_mask": keep, "ar": batch["ar"] & keep if keep_causal else torch.zeros_like(keep),
            "loss": torch.zeros_like(keep), "tokens": torch.where(keep, tokens, torch.zeros_like(tokens))}


def prefix_only(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch cut to each row's prompt (inference input): targets become padding."""
    return _cut(batch, batch["prefix_length"], keep_causal=False)


def expert_prompt(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch cut to what the action expert sees (``expert_context``: the prefix, and a subtask
    row's subtask text, teacher-forced, with its causal flags): the flow's input at inference."""
    return _cut(batch, batch.get("expert_context", batch["prefix_length"]), keep_causal=True)


def generation_prompt(batch: Mapping[str, torch.Tensor], action_range) -> dict[str, torch.Tensor]:
    """The batch cut where each row's action tokens start (``action_range``: the build's FAST /
    bins id range), with everything before kept as it was, causal flags included: a pi0-FAST
    prompt's "Action: " and a subtask sample's "Subtask: ...;\nAction: " lie past the prefix and
    are the policy's input too. Rows without action tokens are cut at their prefix."""
    tokens, mask = batch["tokens"], batch["token_mask"]
    positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
    is_action = mask & (tokens >= action_range.first) & (tokens <= action_range.last)
    is_action &= positions >= batch.get("expert_context", batch["prefix_length"])[:, None]  # not subtask text
    first_action = torch.where(is_action.any(dim=1), is_action.float().argmax(dim=1), batch["prefix_length"])
    return _cut(batch, first_action, keep_causal=True)
