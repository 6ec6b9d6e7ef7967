"""A recipe as data: the ``[mixture]`` settings and the ``[[sources]]`` of a build, typed.

This is what a manifest records (``Manifest.recipe``) and what the trainer, the policy, the
evaluators and ``kidata compare`` read, without the build: none of them may import the source
readers. Parsing and validating a recipe file, and opening its sources' readers, is the build's
(``kidata.pipelines.recipe``, whose ``Recipe`` and ``SourceConfig`` extend these). ``canonical()``
is the recipe as the build sees it (defaults filled in, paths resolved): the manifest records it
and hashes it, and ``Recipe.from_canonical`` reads it back unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

from kidata.choices import ActionIdRule, CaptionChoice, Normalization, PromptFormat, StateEncoding
from kidata.hashing import json_sha256

SOURCE_FIELDS = ("name", "reader", "weight", "holdout")  # a canonical source's keys; the rest are the reader's options


class RecordedRecipeError(ValueError):
    """A recorded recipe (a manifest's) that this version cannot read: the mixture must be rebuilt."""


@dataclass(frozen=True)
class MixtureConfig:
    name: str
    seed: int = 0
    action_horizon: int = 10
    action_dim: int | None = None  # default: the largest action dimension among the robot sources
    image_size: int = 224
    jpeg_quality: int = 95
    state_encoding: StateEncoding = "text"
    prompt_format: PromptFormat = "pi05"
    max_tokens: int = 256
    text_tokenizer: str = "tokenizers/demo-text"
    fast_tokenizer: Any = field(default_factory=lambda: {"fit": True, "vocab_size": 1024, "scale": 10.0})
    fast_token_rule: ActionIdRule = "openpi"
    fast_token_skip: int = 128
    fast_token_offset: int = 0
    special_state_first: int | None = None
    normalization: Normalization = "quantile"
    holdout: float = 0.0
    step_stride: int = 1
    shard_size_mb: float = 256.0
    units_per_source: int = 16
    reservoir_size: int = 20_000
    caption_choice: CaptionChoice = "one"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    reader: str
    weight: float = 1.0
    holdout: float | None = None  # default: the mixture's
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def delta_mask(self) -> tuple[bool, ...] | None:
        """``mapping.delta``: the action dimensions trained relative to the state (``kidata.delta``),
        or None when every dimension stays absolute."""
        mapping = self.options.get("mapping")
        return tuple(mapping["delta"]) if isinstance(mapping, Mapping) and "delta" in mapping else None

    @property
    def reader_options(self) -> dict[str, Any]:
        """The options the reader opens with: ``mapping.delta`` is the build's, not the reader's (a
        mapping that held only it is dropped, so ``dataset = ...`` entries take it too)."""
        options = dict(self.options)
        mapping = options.get("mapping")
        if isinstance(mapping, Mapping) and "delta" in mapping:
            rest = {key: value for key, value in mapping.items() if key != "delta"}
            if rest:
                options["mapping"] = rest
            else:
                del options["mapping"]
        return options


@dataclass(frozen=True)
class Recipe:
    mixture: MixtureConfig
    sources: tuple[SourceConfig, ...]
    base_dir: str

    source_type: ClassVar[type] = SourceConfig  # what ``from_canonical`` builds each source as

    def canonical(self) -> dict[str, Any]:
        return {"mixture": asdict(self.mixture),
                "sources": [{"name": s.name, "reader": s.reader, "weight": s.weight, "holdout": s.holdout,
                             **dict(sorted(s.options.items()))} for s in self.sources]}

    @property
    def sha256(self) -> str:
        return json_sha256(self.canonical())

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"recipe has no source {name!r} (sources: {[s.name for s in self.sources]})")

    def sources_read_by(self, reader: str) -> list[SourceConfig]:
        """This recipe's sources of one reader (e.g. ``metaworld``), in recipe order."""
        return [source for source in self.sources if source.reader == reader]

    @classmethod
    def of(cls, recipe: "Recipe") -> "Recipe":
        """``recipe`` as this class: e.g. a manifest's recipe as the build's, to open its readers."""
        return cls.from_canonical(recipe.canonical(), base_dir=recipe.base_dir)

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any], *, base_dir: str = ".", origin: str = "recipe") -> "Recipe":
        """A recipe from its canonical form (a manifest's ``recipe``), as the build recorded it:
        validated then, so only its shape is checked here."""
        try:
            mixture = MixtureConfig(**data["mixture"])
            sources = tuple(cls.source_type(entry["name"], entry["reader"], entry["weight"], entry["holdout"],
                                            {k: v for k, v in entry.items() if k not in SOURCE_FIELDS})
                            for entry in data["sources"])
        except (KeyError, TypeError) as error:
            raise RecordedRecipeError(f"{origin}: the recorded recipe lacks or has an unknown field ({error}); rebuild "
                                      "the mixture with this kidata version") from None
        return cls(mixture, sources, base_dir)
