"""The type and range of every number a recipe sets, checked where the recipe is read, and the
bounds on what a recipe may ask a build for: a recipe is data, and ``action_horizon = 100000``
must be one sentence naming the limit, not a build that grows to 10 GB before anything fails.

Each limit is a setting no real mixture comes near (openpi's horizons are 10-50, PaliGemma's
images 224-896 pixels, FAST vocabularies 1-2k tokens); raising one is a one-line change here.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

INT, FLOAT = "a whole number", "a number"
# key: (kind, lowest, highest, whether the highest is allowed, None allowed)
MIXTURE_NUMBERS: dict[str, tuple[str, float, float, bool, bool]] = {
    "seed": (INT, 0, 2**63 - 1, True, False),
    "action_horizon": (INT, 1, 1000, True, False),
    "action_dim": (INT, 1, 1024, True, True),
    "image_size": (INT, 1, 2048, True, False),
    "jpeg_quality": (INT, 1, 100, True, False),
    "max_tokens": (INT, 1, 32768, True, False),
    "fast_token_skip": (INT, 0, 1 << 24, True, False),
    "fast_token_offset": (INT, 0, 1 << 24, True, False),
    "special_state_first": (INT, 0, 1 << 24, True, True),
    "holdout": (FLOAT, 0.0, 1.0, False, False),
    "step_stride": (INT, 1, 100_000, True, False),
    "shard_size_mb": (FLOAT, 1e-3, 65536.0, True, False),
    "units_per_source": (INT, 1, 100_000, True, False),
    "reservoir_size": (INT, 1, 1_000_000, True, False),
}
FAST_NUMBERS: dict[str, tuple[str, float, float, bool, bool]] = {
    "vocab_size": (INT, 2, 1 << 20, True, False),
    "scale": (FLOAT, 1e-6, 1e6, True, False),
    "target_rmse": (FLOAT, 1e-9, 1.0, True, True),
    "min_frequency": (INT, 1, 1 << 30, True, False),
    "margin": (INT, 0, 1 << 20, True, True),
    "bins": (INT, 2, 65536, True, False),
    "stride": (INT, 1, 1000, True, False),
}
# reader options that are numbers (the readers' own checks follow when they open)
SOURCE_NUMBERS: dict[str, tuple[str, float, float, bool, bool]] = {
    "seed": (INT, 0, 2**63 - 1, True, True),
    "image_size": (INT, 1, 2048, True, True),
    "episodes_per_task": (INT, 1, 1_000_000, True, True),
    "scenes_per_task": (INT, 1, 1_000_000, True, True),
    "max_steps": (INT, 1, 1_000_000, True, True),
    "goal_marker_scale": (FLOAT, 1e-3, 100.0, True, True),
    "tolerance_s": (FLOAT, 0.0, 60.0, True, True),
    "action_noise": (FLOAT, 0.0, 10.0, True, True),
}
# reader options that are switches: Python's bool("false") is True, so a string here would turn the switch on
SOURCE_FLAGS = ("pointing", "privileged_state", "skip_corrupt")
# reader options that are one name (a camera, a dataset entry, a split, a hub revision), not a path
SOURCE_NAMES = ("camera", "dataset", "split", "action_space", "answer", "repo_id", "revision")
# a source's sampling weight: only the ratios count, and two weights near float's limit sum to inf (every source then
# normalized to 0)
MAX_SOURCE_WEIGHT = 1e6
# the sample's tokens are held as one array per chunk: horizon x dimensions floats per sample
MAX_CHUNK_VALUES = 1000 * 64
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# folders and files a build writes beside the sources' shard folders (kidata.pipelines.ownership)
RESERVED_SOURCE_NAMES = ("_state", "norm_stats", "fast_tokenizer", "inspect", "manifest", "build_report", "build")


def check_number(where: str, key: str, value: Any, spec: tuple[str, float, float, bool, bool],
                 error: Callable[[str], Exception]) -> None:
    """Refuses ``value`` unless it is of the spec's kind and inside its range, naming key and limit."""
    kind, low, high, high_allowed, optional = spec
    if value is None and optional:
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (kind == INT and not isinstance(value, int)):
        raise error(f"{where}{key} = {value!r}: expected {kind}" + (" or nothing" if optional else ""))
    upper = f"<= {high:g}" if high_allowed else f"< {high:g}"
    inside = math.isfinite(value) and low <= value and (value <= high if high_allowed else value < high)
    if not inside:
        raise error(f"{where}{key} = {value!r}: it must be {kind} >= {low:g} and {upper}")


def check_source_option(where: str, key: str, value: Any, error: Callable[[str], Exception]) -> None:
    """Refuses a switch that is not true / false and a name that is not a non-empty string, naming the key."""
    if key in SOURCE_FLAGS and not isinstance(value, bool):
        raise error(f"{where}{key} = {value!r}: expected true or false")
    if key in SOURCE_NAMES:
        check_text(where, key, value, error)


def check_text(where: str, key: str, value: Any, error: Callable[[str], Exception]) -> None:
    """A name, path or hub id: a non-empty string without NUL bytes (an empty path would name the recipe's folder)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise error(f"{where}{key} = {value!r}: expected a non-empty string without NUL bytes")


def check_source_name(where: str, name: Any, error: Callable[[str], Exception]) -> None:
    """A source's name becomes its shard folder and file prefix: letters, digits, '_' and '-' (no
    dots, slashes, NUL bytes or empty names), and none of the names a build writes beside it."""
    if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
        raise error(f"{where}: name = {name!r}: source names are 1-64 letters, digits, '_' or '-', starting with a "
                    "letter or digit (the name is a folder of the build)")
    if name.lower() in RESERVED_SOURCE_NAMES:
        raise error(f"{where}: name = {name!r} is a folder or file the build itself writes "
                    f"({', '.join(RESERVED_SOURCE_NAMES)}); choose another name")
