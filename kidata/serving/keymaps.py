"""From a client's observation keys to kidata's (``images`` by camera, ``state``, ``prompt``).

Presets follow the observations openpi's examples send: ``libero`` (examples/libero) and
``droid`` (examples/droid); ``kidata`` takes kidata's own layout as is. A JSON file gives a user's
own: ``{"images": {"their/key": "base_0", ...}, "state": ["their/state", ...], "prompt": "prompt"}``
(state parts are concatenated in order)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class RequestError(ValueError):
    """A request the server answers with an error and keeps serving after."""


@dataclass(frozen=True)
class KeyMap:
    images: Mapping[str, str] = field(default_factory=dict)  # client key -> kidata camera
    state: tuple[str, ...] = ()
    prompt: str = "prompt"

    def observation(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """kidata's observation from a request; a missing key is a RequestError naming it."""
        if not self.images:  # the kidata layout; the policy checks each value as data
            missing = [key for key in ("images", "state", "prompt") if key not in request]
            if missing:
                raise RequestError(f"request lacks {missing} (kidata layout: images by camera, state, prompt)")
            return {"images": request["images"], "state": request["state"], "prompt": request["prompt"]}
        missing = [key for key in (*self.images, *self.state, self.prompt) if key not in request]
        if missing:
            raise RequestError(f"request lacks {missing}; this server expects {list(self.images)} (images, uint8 "
                               f"[H, W, 3]), {list(self.state)} (state) and {self.prompt!r}")
        state = np.concatenate([_state_part(key, request[key]) for key in self.state]) if self.state else np.zeros(0)
        prompt = request[self.prompt]
        if isinstance(prompt, bytes):
            try:
                prompt = prompt.decode("utf-8")
            except UnicodeDecodeError as error:
                raise RequestError(f"{self.prompt!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        return {"images": {camera: request[key] for key, camera in self.images.items()}, "state": state,
                "prompt": prompt}

    def describe(self) -> dict[str, Any]:
        return {"images": dict(self.images), "state": list(self.state), "prompt": self.prompt}


def _state_part(key: str, value: Any) -> np.ndarray:
    """One state key of a request as a flat float64 vector, or a RequestError naming the key."""
    array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple, int, float, np.number)) else None
    if array is None or array.dtype.kind not in "iuf":
        kind = array.dtype if array is not None else type(value).__name__
        raise RequestError(f"{key!r} is {kind}; state parts are real numbers (float or int arrays)")
    return array.astype(np.float64).reshape(-1)


PRESETS = {
    "kidata": KeyMap(),
    "libero": KeyMap({"observation/image": "base_0", "observation/wrist_image": "left_wrist_0"},
                     ("observation/state",)),
    "droid": KeyMap({"observation/exterior_image_1_left": "base_0", "observation/wrist_image_left": "left_wrist_0"},
                    ("observation/joint_position", "observation/gripper_position")),
}


MAX_KEYMAP_BYTES = 1024 * 1024


def keymap(name_or_path: str) -> KeyMap:
    """A preset by name, or a JSON key map file: ``{"images": {client key: camera}, "state":
    [client keys], "prompt": client key}``; anything else is refused naming the file."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"--keys {name_or_path!r}: neither a preset ({sorted(PRESETS)}) nor a JSON file")
    shape = ('{"images": {"client key": "camera", ...}, "state": ["client key", ...], "prompt": "client key"}')
    if path.stat().st_size > MAX_KEYMAP_BYTES:
        raise ValueError(f"--keys {path}: {path.stat().st_size} bytes, larger than a key map can be "
                         f"({MAX_KEYMAP_BYTES}); expected {shape}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"--keys {path} is not a JSON key map ({error}); expected {shape}") from None
    unknown = set(data) - {"images", "state", "prompt"} if isinstance(data, dict) else set()
    if not isinstance(data, dict) or unknown or "images" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: a key map has images (client key -> camera), state (keys) and prompt; "
                         f"found {found}")
    images, state, prompt = data["images"], data.get("state", []), data.get("prompt", "prompt")
    if (not isinstance(images, dict) or not images or not all(isinstance(v, str) for v in images.values())
            or not isinstance(state, list) or not all(isinstance(k, str) for k in state) or not isinstance(prompt, str)):
        raise ValueError(f"{path}: images must map client keys to camera names, state list client keys and prompt "
                         f"name one; expected {shape}")
    return KeyMap(dict(images), tuple(state), prompt)
