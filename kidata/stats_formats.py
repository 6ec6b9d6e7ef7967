"""Normalization statistics in the files other tools read: openpi's ``norm_stats.json`` and
LeRobot's ``stats.json``, written from kidata's ``NormStats`` (and read back the same way).

* openpi (``openpi.shared.normalize``): ``{"norm_stats": {"state": {...}, "actions": {...}}}`` with
  ``mean``, ``std``, ``q01``, ``q99`` per key; a policy's assets folder holds it as
  ``<asset_id>/norm_stats.json``.
* LeRobot (``meta/stats.json`` of a v3.0 dataset): per feature (``observation.state``, ``action``)
  ``min``, ``max``, ``mean``, ``std``, ``count`` (a one-element list) and ``q01``, ``q10``, ``q50``,
  ``q90``, ``q99``.
"""

from __future__ import annotations

import json
from typing import Any

from kidata.normalize import DimStats, NormStats

FORMATS = ("kidata", "openpi", "lerobot")
FILE_NAMES = {"kidata": "kidata_stats.json", "openpi": "norm_stats.json", "lerobot": "stats.json"}
LEROBOT_KEYS = {"state": "observation.state", "actions": "action"}


def to_openpi(stats: NormStats) -> dict[str, Any]:
    keys = ("mean", "std", "q01", "q99")
    return {"norm_stats": {name: {k: getattr(part, k) for k in keys}
                           for name, part in (("state", stats.state), ("actions", stats.actions))}}


def _lerobot_feature(part: DimStats) -> dict[str, Any]:
    missing = [q for q in ("q10", "q50", "q90") if getattr(part, q) is None]
    if missing:
        raise ValueError(f"these statistics lack {missing} (written before kidata recorded them); recompute them "
                         "with `kidata stats` or rebuild")
    return {"min": part.min, "max": part.max, "mean": part.mean, "std": part.std, "count": [part.count],
            "q01": part.q01, "q10": part.q10, "q50": part.q50, "q90": part.q90, "q99": part.q99}


def to_lerobot(stats: NormStats) -> dict[str, Any]:
    return {LEROBOT_KEYS["state"]: _lerobot_feature(stats.state), LEROBOT_KEYS["actions"]: _lerobot_feature(stats.actions)}


def render(stats: NormStats, format: str) -> str:
    """The file text of ``stats`` in one of ``FORMATS``."""
    if format not in FORMATS:
        raise ValueError(f"statistics format {format!r}: choose one of {FORMATS}")
    payload = {"kidata": stats.to_json, "openpi": lambda: to_openpi(stats), "lerobot": lambda: to_lerobot(stats)}[format]()
    return json.dumps(payload, indent=2) + "\n"
