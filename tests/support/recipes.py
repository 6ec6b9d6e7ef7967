"""Mixture recipes for tests and benchmarks, built as tables and written as the TOML files users write.

A recipe is ``{"mixture": {...}, "sources": [{...}, ...]}``: the tables ``kidata.pipelines.recipe``
parses. ``RecipeDraft`` holds one and changes it a setting at a time; the source helpers spell the
real fixtures in ../shared once; ``toml_text`` writes any such table as TOML that reads back to it
(key order kept, so a source's options reach the manifest in the order they are written)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.data import shared_path

Table = dict[str, Any]

TEST_MIXTURE: Mapping[str, Any] = {
    "name": "test-mix", "action_horizon": 4, "image_size": 64, "max_tokens": 128, "holdout": 0.2,
    "units_per_source": 3, "shard_size_mb": 0.25, "fast_tokenizer": {"fit": True, "vocab_size": 300, "scale": 10.0},
}
"""The mixture settings most build tests share: 4-step chunks of 64-pixel images, a FAST tokenizer fit on the data."""


@dataclass(frozen=True)
class RecipeDraft:
    """A recipe's tables before they are written: ``mixture`` ([mixture]) and ``sources`` ([[sources]])."""

    mixture: Mapping[str, Any]
    sources: tuple[Mapping[str, Any], ...] = field(default=())

    def with_mixture(self, **settings: Any) -> RecipeDraft:
        """The draft with these [mixture] settings changed or added (in place, so the order stays); None drops one."""
        return RecipeDraft(_updated(self.mixture, settings), self.sources)

    def with_sources(self, *sources: Mapping[str, Any]) -> RecipeDraft:
        """The draft with these sources in place of its own."""
        return RecipeDraft(self.mixture, tuple(sources))

    def tables(self) -> Table:
        """The recipe as the nested tables TOML reads it to."""
        return {"mixture": dict(self.mixture), "sources": [dict(source) for source in self.sources]}

    def toml(self) -> str:
        return toml_text(self.tables())

    def write(self, path: Path) -> Path:
        """Writes the recipe as TOML at ``path`` and returns ``path``."""
        path.write_text(self.toml())
        return path


def _updated(table: Mapping[str, Any], changes: Mapping[str, Any]) -> Table:
    merged = {**table, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def source(name: str, reader: str, **options: Any) -> Table:
    """A [[sources]] table: its name, its reader and the reader's options, in this order."""
    return {"name": name, "reader": reader, **options}


def bridge(name: str = "bridge", **options: Any) -> Table:
    """The real 25 + 25 episode OXE Bridge dataset in ../shared, read as RLDS."""
    return source(name, "rlds", path=str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")),
                  dataset="bridge_dataset", **options)


def vqav2(name: str = "vqav2", **options: Any) -> Table:
    """The VQAv2 fixture in ../shared at weight 0.2 unless ``options`` says otherwise."""
    vqa = shared_path("data", "vqav2_allennlp")
    return source(name, "vqav2", questions=str(vqa / "questions.json"), annotations=str(vqa / "annotations.json"),
                  images=str(vqa / "images"), **{"weight": 0.2, **options})


def coco_detection(name: str = "coco", **options: Any) -> Table:
    """The 37-image COCO detection fixture in ../shared."""
    coco = shared_path("data", "coco_detection")
    return source(name, "coco_detection", instances=str(coco / "annotations" / "instances_val2017.json"),
                  images=str(coco / "images" / "val2017"), **options)


def lerobot_bridge(root: Path, name: str = "bridge", **options: Any) -> Table:
    """A LeRobot dataset at ``root`` holding the Bridge fixture's features (two cameras, state, action)."""
    mapping = {"cameras": {"base_0": "observation.images.image_0", "base_1": "observation.images.image_1"},
               "state": ["observation.state"], "action": ["action"]}
    return source(name, "lerobot", path=str(root), mapping=mapping, **options)


def mixture_recipe(*sources: Mapping[str, Any], units: int = 3, **settings: Any) -> RecipeDraft:
    """TEST_MIXTURE with ``units`` units per source and ``settings`` changed, over ``sources`` (Bridge + VQAv2
    when none is given)."""
    chosen = sources or (bridge(), vqav2())
    return RecipeDraft(TEST_MIXTURE, tuple(chosen)).with_mixture(units_per_source=units, **settings)


def write_recipe(path: Path, *sources: Mapping[str, Any], units: int = 3, **settings: Any) -> Path:
    """mixture_recipe(...) written as TOML at ``path``; returns ``path``."""
    return mixture_recipe(*sources, units=units, **settings).write(path)


def lerobot_recipe(path: Path, root: Path, units: int = 3) -> Path:
    """The test mixture over a LeRobot dataset at ``root`` as the one source, written at ``path``."""
    return write_recipe(path, lerobot_bridge(root), units=units)


# ---------------------------------------------------------------------------------- TOML writer
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_text(tables: Mapping[str, Any]) -> str:
    """``tables`` as TOML that ``tomllib.loads`` reads back to an equal dict with the same key order: a
    mapping becomes a [table], a list of mappings an array of [[tables]], mappings inside them inline."""
    lines: list[str] = []
    for name, value in tables.items():
        if isinstance(value, Mapping):
            lines += [f"[{_key(name)}]", *_pairs(value), ""]
        elif isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, Mapping) for v in value):
            for item in value:
                lines += [f"[[{_key(name)}]]", *_pairs(item), ""]
        else:
            raise TypeError(f"{name} = {value!r}: a recipe's top level holds tables or arrays of tables")
    return "\n".join(lines)


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(key)} = {_value(value)}" for key, value in table.items()]


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"{value!r}: no TOML form")
