"""How a raw robot dataset becomes standard episodes: cameras, state, action, gripper, language.

A ``DatasetSpec`` is data. Vector parts are written as ``"path[start:stop]|transform"`` strings,
e.g. ``"action/world_vector"``, ``"observation/state[:6]"`` or
``"action/gripper_closedness_action|pm1_close_to_open"``; paths are relative to an RLDS step
(``observation/...``, ``action/...``, ``language_instruction``). A user's own RLDS dataset is a
recipe table with the same fields (``spec_from_mapping``); no code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from kidata.config import nearest
from kidata.schema import CAMERA_NAMES

# Gripper conventions, each mapped to the standard one: 1 = open, 0 = closed.
GRIPPER_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    # closedness in [0, 1] (1 = closed) -> openness
    "close_to_open": lambda x: 1.0 - x,
    # [-1, 1] with +1 = close, -1 = open -> [0, 1] openness
    "pm1_close_to_open": lambda x: (1.0 - x) / 2.0,
    # [-1, 1] with +1 = open -> [0, 1] openness
    "pm1_open_to_open": lambda x: (x + 1.0) / 2.0,
    # a boolean "open" flag
    "bool_open": lambda x: x.astype(np.float32),
    # a boolean "closed" flag
    "bool_closed": lambda x: 1.0 - x.astype(np.float32),
    # [-1, 1] with +1 = open, clipped into [0, 1] (Octo's and OpenVLA's rule: below 0 is closed)
    "clip_open": lambda x: np.clip(x, 0.0, 1.0),
    # RT-1 style relative command over time: +1 = close, -1 = open, 0 = keep the last command
    "relative_close_to_open": lambda x: _relative_close_to_open(x),
}
# transforms whose output at a step depends on earlier steps: apply them to one episode at a time
STATEFUL_TRANSFORMS = frozenset({"relative_close_to_open"})
RELATIVE_DEADBAND = 0.1  # |command| <= 0.1 is "keep" (Octo's and OpenVLA's rel2abs_gripper_actions)


def _relative_close_to_open(commands: np.ndarray) -> np.ndarray:
    """Absolute openness [T, 1] from relative commands [T, 1] (> 0.1 close, < -0.1 open, else keep).
    Before the first command the gripper is in the state opposite to it (it must have been, for
    the command to mean anything); an episode without commands is open throughout. This is the
    rule of Octo's and OpenVLA's ``rel2abs_gripper_actions``."""
    flat = commands[:, 0]
    thresholded = np.where(flat > RELATIVE_DEADBAND, 0.0, np.where(flat < -RELATIVE_DEADBAND, 1.0, np.nan))
    given = thresholded[~np.isnan(thresholded)]
    current = 1.0 - given[0] if len(given) else 1.0
    openness = np.empty((len(flat), 1), dtype=np.float32)
    for step, value in enumerate(thresholded):
        if not np.isnan(value):
            current = value
        openness[step, 0] = current
    return openness

_PART = re.compile(r"^(?P<key>[A-Za-z0-9_/.]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?(\|(?P<transform>\w+))?$")


@dataclass(frozen=True)
class Part:
    """A slice of one raw feature, with an optional convention transform."""

    key: str
    start: int | None = None
    stop: int | None = None
    transform: str = "identity"

    @classmethod
    def parse(cls, text: str) -> "Part":
        match = _PART.match(text.strip())
        if match is None:
            raise ValueError(f"cannot parse vector part {text!r}; write e.g. 'observation/state[:6]|identity'")
        transform = match["transform"] or "identity"
        if transform not in GRIPPER_TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r} in {text!r}{nearest(transform, GRIPPER_TRANSFORMS)}")
        start = int(match["start"]) if match["start"] else None
        stop = int(match["stop"]) if match["stop"] else None
        return cls(match["key"], start, stop, transform)

    @property
    def text(self) -> str:
        """The part in the notation it was written in: ``action[6:7]|close_to_open``."""
        span = f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"
        return (self.key + (span if (self.start, self.stop) != (None, None) else "")
                + (f"|{self.transform}" if self.transform != "identity" else ""))

    def take(self, value: np.ndarray) -> np.ndarray:
        """float32 [T, n] from a raw feature [T] or [T, k]."""
        array = np.asarray(value)
        if array.ndim == 1:
            array = array[:, None]
        array = array.reshape(len(array), -1)[:, self.start : self.stop].astype(np.float32, copy=False)
        return GRIPPER_TRANSFORMS[self.transform](array).astype(np.float32, copy=False)


def _parts(texts: tuple[str, ...] | list[str]) -> tuple[Part, ...]:
    return tuple(Part.parse(text) for text in texts)


@dataclass(frozen=True)
class DatasetSpec:
    """The standardization entry of one dataset.

    cameras: standard camera -> raw observation key; camera_flags: standard camera -> an
    episode_metadata boolean that says whether that camera is real in this episode;
    blank_cameras_absent: a camera whose first frame is entirely black is absent (for datasets
    that pad missing views with zeros and whose flags cannot be trusted);
    state/action: parts concatenated in order; language: step keys holding instructions (all
    non-empty distinct ones are kept); language_format: "text" or "utf8_ids" (int32 byte codes);
    episode_filter: "success_in_path" keeps episodes whose episode_metadata/file_path contains
    "success"; drop_noops: remove steps whose action is a no-op (LIBERO's RLDS convention).
    """

    name: str
    cameras: Mapping[str, str]
    state: tuple[Part, ...]
    action: tuple[Part, ...]
    fps: float
    action_space: str
    language: tuple[str, ...] = ("language_instruction",)
    language_format: str = "text"
    camera_flags: Mapping[str, str] = field(default_factory=dict)
    blank_cameras_absent: bool = False
    episode_filter: str | None = None
    drop_noops: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        for camera in list(self.cameras) + list(self.camera_flags):
            if camera not in CAMERA_NAMES:
                raise ValueError(f"{self.name}: camera {camera!r} is not one of {CAMERA_NAMES}")
        if self.language_format not in ("text", "utf8_ids"):
            raise ValueError(f"{self.name}: language_format must be 'text' or 'utf8_ids'")

    @property
    def raw_keys(self) -> set[str]:
        keys = {f"observation/{k}" for k in self.cameras.values()}
        keys |= {part.key for part in self.state + self.action}
        return keys | set(self.language)


def make_spec(
    name: str,
    *,
    cameras: Mapping[str, str],
    state: list[str],
    action: list[str],
    fps: float,
    action_space: str,
    **options: Any,
) -> DatasetSpec:
    """A DatasetSpec from part strings (the registry's and recipes' notation)."""
    return DatasetSpec(
        name=name, cameras=dict(cameras), state=_parts(state), action=_parts(action), fps=fps,
        action_space=action_space, **options,
    )


_MAPPING_KEYS = {"cameras", "state", "action", "fps", "action_space", "language", "language_format",
                 "camera_flags", "blank_cameras_absent", "episode_filter", "drop_noops", "notes"}


def spec_from_mapping(name: str, mapping: Mapping[str, Any]) -> DatasetSpec:
    """A user's own dataset from a recipe table: the DatasetSpec fields, parts as strings."""
    unknown = set(mapping) - _MAPPING_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"dataset mapping {name!r}: unknown key {key!r}{nearest(key, _MAPPING_KEYS)}")
    for required in ("cameras", "state", "action", "fps"):
        if required not in mapping:
            raise ValueError(f"dataset mapping {name!r}: missing {required!r}")
    _check_mapping_types(name, mapping)
    options = {k: v for k, v in mapping.items() if k not in ("cameras", "state", "action", "fps", "action_space")}
    if "language" in options:
        options["language"] = tuple(options["language"])
    return make_spec(
        name, cameras=mapping["cameras"], state=list(mapping["state"]), action=list(mapping["action"]),
        fps=float(mapping["fps"]), action_space=mapping.get("action_space", "custom"), **options,
    )


def _check_mapping_types(name: str, mapping: Mapping[str, Any]) -> None:
    """The types of the required keys, refused in one sentence naming the key (a string where a list
    goes would be read letter by letter, ``fps = "ten"`` end in float()'s message)."""
    cameras, fps = mapping["cameras"], mapping["fps"]
    if not isinstance(cameras, Mapping) or not all(isinstance(v, str) and v for v in cameras.values()):
        raise ValueError(f"dataset mapping {name!r}: cameras = {cameras!r}: expected a table of standard camera = "
                         "observation key, e.g. { base_0 = \"image\" }")
    for key in ("state", "action"):
        if not isinstance(mapping[key], (list, tuple)) or not all(isinstance(p, str) and p for p in mapping[key]):
            raise ValueError(f"dataset mapping {name!r}: {key} = {mapping[key]!r}: expected a list of parts, "
                             "e.g. [\"state[:7]\"]")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"dataset mapping {name!r}: fps = {fps!r}: expected a number of steps per second > 0")


# A no-op step, as LIBERO's RLDS release removed them: arm action (every value but the last) of norm
# below NOOP_NORM and the gripper command (the last value) unchanged from the previous step.
NOOP_NORM = 1e-4


def noop_mask(actions: np.ndarray) -> np.ndarray:
    """bool [T]: True for no-op steps (tiny arm motion, gripper command unchanged)."""
    arm_still = np.linalg.norm(actions[:, :-1], axis=1) < NOOP_NORM
    same_gripper = np.zeros(len(actions), dtype=bool)
    same_gripper[1:] = actions[1:, -1] == actions[:-1, -1]
    return arm_still & same_gripper
