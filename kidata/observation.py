"""What a caller hands a policy, read as data before anything else touches it: the observation
(images by camera, state, prompt), the flow's starting noise and the step count.

Each check refuses with one sentence (``ObservationError``) naming the key, what was given and
what is expected: a wrong dtype, shape or type, an empty or oversized image, a non-finite or
absurdly large number, a prompt that is not text. The bounds are far outside any real robot's
values; they exist so that a unit mix-up or a corrupted message never becomes an action."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

MAX_IMAGE_SIDE = 8192  # pixels per side; cameras deliver at most 4K (3840)
MAX_STATE_MAGNITUDE = 1e6  # robot units (radians, metres, even millimetres stay far below)
MAX_NOISE_MAGNITUDE = 100.0  # the flow starts from N(0, 1): |x| > 100 has probability ~0
MAX_PROMPT_CHARS = 10_000  # a task instruction; the tokenizer's max_tokens bounds it further
MAX_NUM_STEPS = 1000  # flow integration steps (openpi uses 10)


class ObservationError(ValueError):
    """An observation the policy would misread; names the key and what is expected."""


def check_num_steps(num_steps: Any) -> int:
    """``num_steps`` as an int in [1, MAX_NUM_STEPS]; zero or negative steps would return the
    starting noise itself as actions."""
    if isinstance(num_steps, (bool, np.bool_)) or not isinstance(num_steps, (int, np.integer)) \
            or not 1 <= num_steps <= MAX_NUM_STEPS:
        raise ObservationError(f"num_steps must be a whole number from 1 to {MAX_NUM_STEPS} (flow integration "
                               f"steps; 10 is openpi's), got {num_steps!r}")
    return int(num_steps)


def check_observation(observation: Any, *, cameras: Sequence[str], state_width: int, source: str) -> None:
    """Refuses an observation the model would silently misread: a map with ``images`` (a map
    from each of ``cameras`` to uint8 [H, W, 3] RGB, or None for a camera this robot lacks),
    ``state`` (a finite real vector [state_width]) and ``prompt`` (non-empty Unicode text)."""
    if not isinstance(observation, Mapping):
        raise ObservationError(f"the observation must be a map with 'images', 'state' and 'prompt', "
                               f"got {type(observation).__name__}")
    for key in ("images", "state", "prompt"):
        if key not in observation:
            raise ObservationError(f"observation lacks {key!r} (keys: {sorted(map(str, observation))})")
    check_prompt(observation["prompt"])
    check_images(observation["images"], cameras)
    check_state(observation["state"], state_width, source)


def check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        shown = prompt if isinstance(prompt, str) else type(prompt).__name__
        raise ObservationError(f"prompt must be a non-empty string, got {shown!r}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ObservationError(f"prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are read")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ObservationError(f"prompt is not valid Unicode text ({error.reason}: {prompt[error.start]!r} at "
                               f"character {error.start}); send the instruction as UTF-8 text") from None


def check_images(images: Any, cameras: Sequence[str]) -> None:
    if not isinstance(images, Mapping):
        raise ObservationError(f"images must be a map from camera name to a uint8 [H, W, 3] image (None for a "
                               f"camera the robot lacks), got {type(images).__name__}; the run's cameras are "
                               f"{list(cameras)}")
    unknown = sorted(map(str, set(images) - set(cameras)))
    missing = [camera for camera in cameras if camera not in images]
    if unknown or missing:
        raise ObservationError(f"images: the run's cameras are {list(cameras)}; unknown {unknown}, missing "
                               f"{missing} (pass None for a camera this robot does not have)")
    if all(image is None for image in images.values()):
        raise ObservationError("images: every camera is None; the policy needs at least one image")
    for camera, image in images.items():
        if image is not None:
            check_image(f"images[{camera!r}]", image)


def check_image(key: str, image: Any) -> None:
    array = _array(key, image, "a uint8 [H, W, 3] RGB image")
    if array.dtype != np.uint8:
        raise ObservationError(f"{key} is {array.dtype}; expected uint8 RGB in [0, 255] "
                               "(a float image in [0, 1]: multiply by 255 and cast)")
    if array.ndim != 3 or array.shape[2] != 3:
        hint = " (channel-first? transpose to [H, W, 3])" if array.ndim == 3 and array.shape[0] == 3 else ""
        raise ObservationError(f"{key} has shape {array.shape}; expected [H, W, 3] RGB{hint}")
    if not all(1 <= side <= MAX_IMAGE_SIDE for side in array.shape[:2]):
        raise ObservationError(f"{key} has shape {array.shape}; height and width must be 1 to {MAX_IMAGE_SIDE} pixels")


def check_state(state: Any, width: int, source: str) -> None:
    array = _array("state", state, f"a real vector [{width}]")
    if array.dtype.kind not in "iuf":
        raise ObservationError(f"state is {array.dtype}; expected real numbers (float or int) [{width}]")
    if array.shape != (width,):
        raise ObservationError(f"state has shape {array.shape}; source {source!r} has state [{width}]")
    _check_values("state", array.astype(np.float64), MAX_STATE_MAGNITUDE)


def check_noise(noise: Any, horizon: int, action_dim: int) -> torch.Tensor:
    """The flow's starting noise as a float32 tensor [1, horizon, action_dim] on the device it
    came on ([horizon, action_dim] is taken as one chunk): real, finite, |x| <= MAX_NOISE_MAGNITUDE."""
    tensor = noise if isinstance(noise, torch.Tensor) else torch.from_numpy(
        np.array(_array("noise", noise, f"a float array [1, {horizon}, {action_dim}]")))
    if not tensor.is_floating_point():
        raise ObservationError(f"noise is {tensor.dtype}; expected floating point numbers [1, {horizon}, {action_dim}]")
    if tuple(tensor.shape) not in ((1, horizon, action_dim), (horizon, action_dim)):
        raise ObservationError(f"noise has shape {list(tensor.shape)}; the model's chunk is "
                               f"[1, {horizon}, {action_dim}] (action_horizon, action_dim)")
    if not bool(torch.isfinite(tensor).all()):
        raise ObservationError("noise must be finite numbers, got NaN or infinite values")
    largest = float(tensor.abs().max()) if tensor.numel() else 0.0
    if largest > MAX_NOISE_MAGNITUDE:
        raise ObservationError(f"noise reaches {largest:g}; the flow starts from N(0, 1), |noise| <= "
                               f"{MAX_NOISE_MAGNITUDE:g} is accepted")
    return tensor.reshape(1, horizon, action_dim).float()


def _array(key: str, value: Any, expected: str) -> np.ndarray:
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise ObservationError(f"{key} is {type(value).__name__}; expected {expected}")
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ObservationError(f"{key} is not an array ({error}); expected {expected}") from None
    if array.dtype == object:
        raise ObservationError(f"{key} holds {type(value).__name__} of mixed or ragged items; expected {expected}")
    return array


def _check_values(key: str, values: np.ndarray, bound: float) -> None:
    if not np.isfinite(values).all():
        raise ObservationError(f"{key} must be finite numbers, got NaN or infinite values in {values.tolist()}")
    if values.size and np.abs(values).max() > bound:
        raise ObservationError(f"{key} reaches {np.abs(values).max():g}, beyond {bound:g} in magnitude: a unit "
                               f"mix-up or a corrupted value (values {values.tolist()})")
