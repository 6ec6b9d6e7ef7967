"""The records every stage agrees on: standardized robot episodes (and, later, VLM examples).

Readers in ``kidata.sources`` yield ``Episode``s; everything downstream relies on their contract,
checked here on construction with errors that name the source, the episode and the field. This
module imports only the other ground modules of kidata (choices, delta, images).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, Sequence, TypedDict, get_args

import numpy as np

from kidata.choices import CameraName
from kidata.delta import check_delta_mask, to_delta
from kidata.images import decode_frame

if TYPE_CHECKING:
    import torch

# Standard camera names. A camera a dataset lacks is absent from ``Episode.images``, never a
# black image passed off as real.
CAMERA_NAMES: tuple[str, ...] = get_args(CameraName)


class EpisodeError(ValueError):
    """An episode breaks the contract (a reader bug or a wrong mapping), not a data defect."""


class Frames:
    """One camera's frames [T] as encoded bytes (decoded on access) or a uint8 array [T, H, W, 3].

    Statistics passes only need the count; building samples decodes one frame at a time.
    """

    def __init__(self, frames: Sequence[bytes] | np.ndarray, *, rotate_180: bool = False) -> None:
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"decoded frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        self._frames = frames
        self.rotate_180 = rotate_180

    @property
    def encoded(self) -> bool:
        return not isinstance(self._frames, np.ndarray)

    def __len__(self) -> int:
        return len(self._frames)


    def frame(self, step: int) -> np.ndarray:
        """uint8 [H, W, 3] of one step, decoded and rotated as needed."""
        if self.encoded:
            data = bytes(self._frames[step])
            array = decode_frame(data)
        else:
            array = self._frames[step]
        return array[::-1, ::-1] if self.rotate_180 else array

    def array(self) -> np.ndarray:
        """All frames, uint8 [T, H, W, 3]."""
        if not self.encoded and not self.rotate_180:
            return self._frames
        return np.stack([self.frame(step) for step in range(len(self))])


@dataclass(frozen=True)
class LanguageAnnotation:
    """Text for steps [start, stop) of an episode, e.g. the paper's "what the robot should do next"."""

    start: int
    stop: int
    text: str


@dataclass
class Episode:
    """A standardized robot episode of T steps.

    state: float32 [T, S]; actions: float32 [T, A] (the action taken at each step; grippers
    standardized so 1 = open); images: standard camera name -> Frames of length T;
    instructions: the alternative phrasings of the task (one is chosen per sample, seeded).
    """

    episode_id: str
    source: str
    state: np.ndarray
    actions: np.ndarray
    instructions: tuple[str, ...]
    fps: float
    images: dict[str, Frames] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    annotations: tuple[LanguageAnnotation, ...] = ()

    def __post_init__(self) -> None:
        where = f"source {self.source!r}, episode {self.episode_id!r}"
        for name in ("state", "actions"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype != np.float32:
                raise EpisodeError(
                    f"{where}: {name} must be a float32 [T, D] array, got "
                    f"{getattr(value, 'dtype', type(value))} {np.shape(value)}"
                )
        steps = len(self.actions)
        if len(self.state) != steps:
            raise EpisodeError(f"{where}: state has {len(self.state)} steps, actions {steps}")
        for camera, frames in self.images.items():
            if camera not in CAMERA_NAMES:
                raise EpisodeError(f"{where}: camera {camera!r} is not one of {CAMERA_NAMES}")
            if not isinstance(frames, Frames) or len(frames) != steps:
                raise EpisodeError(f"{where}: camera {camera!r} has {len(frames)} frames for {steps} steps")
        if isinstance(self.instructions, str) or not all(isinstance(i, str) for i in self.instructions):
            raise EpisodeError(f"{where}: instructions must be a tuple of strings")
        if not self.fps > 0:
            raise EpisodeError(f"{where}: fps must be positive, got {self.fps}")
        for annotation in self.annotations:
            if not 0 <= annotation.start < annotation.stop <= steps:
                raise EpisodeError(f"{where}: annotation {annotation} outside [0, {steps})")

    @property
    def steps(self) -> int:
        return len(self.actions)

    def action_chunk(
        self, step: int, horizon: int, *, delta_mask: Sequence[bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """actions[step : step + horizon] float32 [H, A] and action_valid bool [H].

        Past the episode end the last action repeats with action_valid False. With
        ``delta_mask`` (bool [M], M <= A and M <= S) the masked dimensions become relative to the
        state at ``step`` (``kidata.delta``: e.g. joints relative, gripper absolute); a mask that
        does not fit the state and actions raises ``DeltaMaskError`` naming both widths.
        """
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} outside episode of {self.steps} steps")
        index = np.arange(step, step + horizon)
        valid = index < self.steps
        chunk = self.actions[np.minimum(index, self.steps - 1)].copy()
        if delta_mask is not None:
            mask = check_delta_mask(delta_mask, state_dim=self.state.shape[1], action_dim=self.actions.shape[1],
                                    where=f"source {self.source!r}, episode {self.episode_id!r}")
            chunk = to_delta(chunk, self.state[step], mask)
        return chunk, valid

    def annotation_at(self, step: int) -> str | None:
        """The language annotation covering ``step``, if any."""
        for annotation in self.annotations:
            if annotation.start <= step < annotation.stop:
                return annotation.text
        return None


def episode_defect(state: np.ndarray, actions: np.ndarray, *, min_steps: int = 2) -> str | None:
    """Why an episode must be quarantined (a per-record defect), or None when it is usable."""
    if len(actions) < min_steps:
        return "too_short"
    if not np.isfinite(actions).all():
        return "nonfinite_actions"
    if not np.isfinite(state).all():
        return "nonfinite_state"
    return None


class Quarantine(Counter):
    """Counts of records kept out of a build, by reason. Mergeable: ``a + b``, ``a.update(b)``."""

    def add(self, reason: str, count: int = 1) -> None:
        self[reason] += count

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.items()))


@dataclass
class Sample:
    """One training sample: a token stream for the backbone plus what the action expert needs.

    tokens int32 [L]; ar bool [L] (False = prefix with full attention, True = causal postfix);
    loss bool [L] (language loss mask); prefix_length: number of prefix tokens (all ar False);
    has_actions: whether the flow-matching action loss applies (action mask);
    fast_span: [start, stop) of the action tokens in ``tokens`` or None; state float32 [S]
    (normalized) or None; state_slot: for continuous state, the index in ``tokens`` before which
    the model inserts the projected state; actions float32 [H, A] (normalized chunk) and
    action_valid bool [H], or None; images: camera -> uint8 [H, W, 3] or encoded bytes.
    """

    kind: str
    tokens: np.ndarray
    ar: np.ndarray
    loss: np.ndarray
    prefix_length: int
    has_actions: bool = False
    fast_span: tuple[int, int] | None = None
    state: np.ndarray | None = None
    state_slot: int | None = None
    actions: np.ndarray | None = None
    action_valid: np.ndarray | None = None
    images: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        length = len(self.tokens)
        if self.tokens.dtype != np.int32 or self.ar.dtype != np.bool_ or self.loss.dtype != np.bool_:
            raise ValueError("tokens must be int32, ar and loss bool")
        if len(self.ar) != length or len(self.loss) != length:
            raise ValueError(f"tokens/ar/loss lengths differ: {length}, {len(self.ar)}, {len(self.loss)}")
        if self.ar[: self.prefix_length].any() or not self.ar[self.prefix_length :].all():
            raise ValueError("ar must be False on the prefix and True on the postfix")
        if self.loss[: self.prefix_length].any():
            raise ValueError("the prefix carries no loss")
        if self.fast_span is not None and not self.prefix_length <= self.fast_span[0] <= self.fast_span[1] <= length:
            raise ValueError(f"fast span {self.fast_span} outside the postfix")

    def __len__(self) -> int:
        return len(self.tokens)


VLM_TASKS = ("caption", "vqa", "point", "detect")


@dataclass
class VlmExample:
    """A vision-language example, image already resized with padding to a square.

    task: caption | vqa | point | detect; image: uint8 [S, S, 3]; prompt: the question or label
    (None for captions); targets: candidate texts (captions, answers; one is chosen per sample);
    points: float32 [N, 2] (y, x) and boxes: float32 [N, 4] (ymin, xmin, ymax, xmax), both in
    [0, 1] of the padded image; labels: one per box or point.
    """

    example_id: str
    source: str
    task: str
    image: np.ndarray
    prompt: str | None = None
    targets: tuple[str, ...] = ()
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"source {self.source!r}, example {self.example_id!r}"
        if self.task not in VLM_TASKS:
            raise EpisodeError(f"{where}: task {self.task!r} is not one of {VLM_TASKS}")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise EpisodeError(f"{where}: image must be uint8 [S, S, 3], got {self.image.dtype} {self.image.shape}")
        for name, width in (("points", 2), ("boxes", 4)):
            value = getattr(self, name)
            if value is not None and (value.ndim != 2 or value.shape[1] != width):
                raise EpisodeError(f"{where}: {name} must be [N, {width}], got {value.shape}")


class Batch(TypedDict):
    """What the model reads (``KIModel.forward``, ``sample_actions``, ``generate``), as
    ``kidata.loader.collate`` builds it from samples and ``kidata.policy`` from one observation.
    B = batch, N = cameras, S = image size, L = max_tokens, H = action horizon.

    =================  ======================  ===================================================
    images             float32 [B, N, 3, S, S]  in [-1, 1]; zeros where a camera is absent
    image_mask         bool [B, N]             camera present
    tokens             int64 [B, L]            padded with 0
    ar                 bool [B, L]             causal (postfix) tokens
    loss               bool [B, L]             language loss mask
    token_mask         bool [B, L]             real (non-padding) tokens
    prefix_length      int64 [B]
    expert_context     int64 [B]               leading tokens the action expert sees: the prefix,
                                               and a subtask row's subtask text before its actions
    state              float32 [B, state_dim]  normalized, zero-padded
    state_dim_mask     bool [B, state_dim]
    actions            float32 [B, H, A]       normalized, zero-padded to the model's action_dim A
    action_valid       bool [B, H]             False past the episode end (and for VLM samples)
    action_dim_mask    bool [B, A]
    has_actions        bool [B]                the flow-matching loss applies
    source_index       int64 [B]               index into the manifest's sources
    vlm_task           int64 [B]               1 + VLM_TASKS.index of a VLM sample; 0 robot
                                               (held-out metrics per task; the model ignores it)
    loss_targets       int64 [N]               optional: flat indices into [B, L - 1] of the positions
                                               whose next token carries loss (the trainer's batches;
                                               found on the host, so the model needs no device sync)
    =================  ======================  ===================================================
    """

    images: torch.Tensor
    image_mask: torch.Tensor
    tokens: torch.Tensor
    ar: torch.Tensor
    loss: torch.Tensor
    token_mask: torch.Tensor
    prefix_length: torch.Tensor
    expert_context: NotRequired[torch.Tensor]
    state: torch.Tensor
    state_dim_mask: torch.Tensor
    actions: torch.Tensor
    action_valid: torch.Tensor
    action_dim_mask: torch.Tensor
    has_actions: torch.Tensor
    source_index: torch.Tensor
    vlm_task: NotRequired[torch.Tensor]
    loss_targets: NotRequired[torch.Tensor]

