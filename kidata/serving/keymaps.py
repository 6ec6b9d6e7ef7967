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
        if not self.images:  # the kidata layout
            missing = [key for key in ("images", "state", "prompt") if key not in request]
            if missing:
                raise RequestError(f"request lacks {missing} (kidata layout: images by camera, state, prompt)")
            return {"images": dict(request["images"]), "state": request["state"], "prompt": request["prompt"]}
        missing = [key for key in (*self.images, *self.state, self.prompt) if key not in request]
        if missing:
            raise RequestError(f"request lacks {missing}; this server expects {list(self.images)} (images, uint8 "
                               f"[H, W, 3]), {list(self.state)} (state) and {self.prompt!r}")
        state = np.concatenate([np.asarray(request[key], dtype=np.float64).reshape(-1) for key in self.state])
        prompt = request[self.prompt]
        return {"images": {camera: request[key] for key, camera in self.images.items()}, "state": state,
                "prompt": prompt.decode() if isinstance(prompt, bytes) else prompt}

    def describe(self) -> dict[str, Any]:
        return {"images": dict(self.images), "state": list(self.state), "prompt": self.prompt}


PRESETS = {
    "kidata": KeyMap(),
    "libero": KeyMap({"observation/image": "base_0", "observation/wrist_image": "left_wrist_0"},
                     ("observation/state",)),
    "droid": KeyMap({"observation/exterior_image_1_left": "base_0", "observation/wrist_image_left": "left_wrist_0"},
                    ("observation/joint_position", "observation/gripper_position")),
}


def keymap(name_or_path: str) -> KeyMap:
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"--keys {name_or_path!r}: neither a preset ({sorted(PRESETS)}) nor a JSON file")
    data = json.loads(path.read_text())
    unknown = set(data) - {"images", "state", "prompt"}
    if unknown or "images" not in data:
        raise ValueError(f"{path}: a key map has images (client key -> camera), state (keys) and prompt; "
                         f"found {sorted(data)}")
    return KeyMap(dict(data["images"]), tuple(data.get("state", ())), data.get("prompt", "prompt"))
