"""Delta actions: chosen action dimensions trained relative to the state at the chunk's first step.

A robot whose actions are absolute joint positions learns them better as offsets from where the
arm is now (openpi's ``DeltaActions`` / ``AbsoluteActions`` transforms). A source opts in with a
boolean mask in its recipe mapping, openpi's ``make_bool_mask(6, -1)`` written out::

    [[sources]]
    mapping = { delta = [true, true, true, true, true, true, false] }   # 6 joints relative, gripper absolute

Mask entry ``i`` pairs action dimension ``i`` with state dimension ``i``; a mask shorter than the
actions leaves the remaining dimensions absolute (as in openpi). The build subtracts the state
before statistics, the FAST fit and encoding (``to_delta``); the policy adds the observed,
unnormalized state back before it returns actions (``to_absolute``). Ground module: numpy only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class DeltaMaskError(ValueError):
    """A delta mask that does not fit the source's state and actions."""


def parse_delta_mask(value: Any, *, where: str) -> tuple[bool, ...]:
    """The recipe's ``delta`` entry as a tuple of bools (refuses anything but a non-empty list of
    true/false; ``where`` names the recipe table)."""
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(flag, bool) for flag in value)):
        raise DeltaMaskError(f"{where}: delta = {value!r}; write one true/false per action dimension, "
                             "e.g. delta = [true, true, true, true, true, true, false]")
    return tuple(value)


def check_delta_mask(mask: Sequence[bool], *, state_dim: int, action_dim: int, where: str) -> np.ndarray:
    """bool [M]: the mask, refused when it is longer than the actions or reaches past the state
    (the message names both widths and the source)."""
    array = np.asarray(mask, dtype=bool)
    if len(array) > action_dim:
        raise DeltaMaskError(f"{where}: mapping.delta has {len(array)} entries but the actions have {action_dim} "
                             f"dimensions (state {state_dim}); give at most {action_dim} entries")
    if len(array) > state_dim:
        raise DeltaMaskError(f"{where}: mapping.delta has {len(array)} entries but the state has {state_dim} "
                             f"dimensions (actions {action_dim}); delta dimension i is relative to state "
                             f"dimension i, so the mask may not be longer than the state")
    return array


def to_delta(chunks: np.ndarray, state: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Relative chunks: ``chunks`` [..., H, A] minus ``state`` [..., S] (one state per chunk, the
    chunk's first step) on the masked dimensions; same shape and dtype, a new array."""
    out = np.array(chunks, copy=True)
    width = len(mask)
    offset = np.where(mask, np.asarray(state)[..., :width], 0).astype(out.dtype)
    out[..., :width] -= offset[..., None, :]
    return out


def to_absolute(chunks: np.ndarray, state: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The inverse of ``to_delta``: ``state`` [..., S] (unnormalized, the robot's units) added back
    to ``chunks`` [..., H, A] on the masked dimensions; a new array."""
    out = np.array(chunks, copy=True)
    width = len(mask)
    offset = np.where(mask, np.asarray(state)[..., :width], 0).astype(out.dtype)
    out[..., :width] += offset[..., None, :]
    return out


def episode_delta_chunks(state: np.ndarray, actions: np.ndarray, horizon: int,
                         mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every step's chunk of one episode, relative: float32 [T, H, A] and valid bool [T, H].

    state float32 [T, S], actions float32 [T, A]; past the episode end the last action repeats
    (``Episode.action_chunk``'s rule) and ``valid`` is False there."""
    steps = len(actions)
    index = np.arange(steps)[:, None] + np.arange(horizon)[None, :]
    valid = index < steps
    chunks = actions[np.minimum(index, steps - 1)]
    return to_delta(chunks, state, mask).astype(np.float32, copy=False), valid
