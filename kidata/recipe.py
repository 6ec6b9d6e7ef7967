"""A recipe as data: the ``[mixture]`` settings and the ``[[sources]]`` of a build, typed.

This is what a manifest records (``Manifest.recipe``) and what the trainer, the policy, the
evaluators and ``kidata compare`` read, without the build: none of them may import the source
readers. Parsing and validating a recipe file, and opening its sources' readers, is the build's
(``kidata.pipelines.recipe``, whose ``Recipe`` and ``SourceConfig`` extend these). ``canonical()``
is the recipe as the build sees it (defaults filled in, paths resolved): the manifest records it
and hashes it, and ``Recipe.from_canonical`` reads it back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Union

from kidata.choices import ActionIdRule, CaptionChoice, Normalization, PromptFormat, StateEncoding
from kidata.config import ConfigError, from_table, table_json
from kidata.hashing import json_sha256

SOURCE_FIELDS = ("name", "reader", "weight", "holdout")  # a canonical source's keys; the rest are the reader's options


class RecordedRecipeError(ValueError):
    """A recorded recipe (a manifest's) that this version cannot read: the mixture must be rebuilt."""


@dataclass(frozen=True)
class FastFit:
    """``fast_tokenizer = { fit = true, vocab_size = 1024, scale = 10 }``: FAST fitted on the build's
    normalized action chunks. A key left out (None) takes ``FastTokenizer.fit``'s default and stays out
    of the recorded recipe, so writing a default does not change the recipe's identity."""

    fit: bool | None = None  # the table's marker; a table without ``bins`` or ``path`` fits either way
    vocab_size: int | None = None
    scale: float | None = None
    target_rmse: float | None = None
    min_frequency: int | None = None
    margin: int | None = None

    def fit_options(self) -> dict[str, Any]:
        """The keyword arguments ``FastTokenizer.fit`` takes: the keys set, less the marker."""
        return {key: value for key, value in table_json(self).items() if key != "fit"}


@dataclass(frozen=True)
class ActionBins:
    """``fast_tokenizer = { bins = 256, stride = 5 }``: naive per-dimension binning, the paper's ablation
    of FAST (``stride`` unset: every step of the chunk)."""

    bins: int
    stride: int | None = None


@dataclass(frozen=True)
class FastFrom:
    """``fast_tokenizer = { path = "org/name" }``: an already fitted tokenizer, a folder or a hub repo id
    (the bare string ``fast_tokenizer = "org/name"`` says the same and is recorded as written)."""

    path: str


# what ``[mixture] fast_tokenizer`` may be: a table of one of these kinds, or a path / hub id
FastSetting = Union[FastFit, ActionBins, FastFrom, str]


def fast_setting_kind(table: Mapping[str, Any]) -> type:
    """Which kind a ``fast_tokenizer`` table is, by the key that names it: ``bins``, ``path``, else a fit."""
    return ActionBins if "bins" in table else FastFrom if "path" in table else FastFit


def fast_setting_table(setting: FastSetting) -> dict[str, Any] | str:
    """A setting as the recipe wrote it: the keys set (None ones left out), or the path string."""
    return setting if isinstance(setting, str) else table_json(setting)


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
    fast_tokenizer: FastSetting = field(default_factory=lambda: FastFit(fit=True, vocab_size=1024, scale=10.0))
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
        mixture = {item.name: getattr(self.mixture, item.name) for item in fields(self.mixture)}
        return {"mixture": {**mixture, "fast_tokenizer": fast_setting_table(self.mixture.fast_tokenizer)},
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
        rebuild = "rebuild the mixture with this kidata version"
        if not isinstance(data, Mapping) or not isinstance(data.get("mixture", {}), Mapping) or not (
                isinstance(data.get("sources", []), list) and all(isinstance(s, Mapping) for s in data.get("sources", []))):
            raise RecordedRecipeError(f"{origin}: the recorded recipe is not a [mixture] table and a list of [[sources]] "
                                      f"tables; {rebuild}")
        try:
            mixture_table = dict(data["mixture"])
            setting = mixture_table.get("fast_tokenizer")
            if isinstance(setting, Mapping):
                mixture_table["fast_tokenizer"] = _recorded(fast_setting_kind(setting), setting, "fast_tokenizer.")
            elif not isinstance(setting, str) and "fast_tokenizer" in mixture_table:
                raise ConfigError(f"fast_tokenizer = {setting!r}: expected a table or a path / hub id")
            mixture = _recorded(MixtureConfig, mixture_table, "")
            sources = tuple(cls.source_type(entry["name"], entry["reader"], entry["weight"], entry["holdout"],
                                            {k: v for k, v in entry.items() if k not in SOURCE_FIELDS})
                            for entry in data["sources"])
        except (KeyError, TypeError) as error:
            raise RecordedRecipeError(f"{origin}: the recorded recipe lacks or has an unknown field ({error}); "
                                      f"{rebuild}") from None
        except ConfigError as error:
            raise RecordedRecipeError(f"{origin}: the recorded recipe's mixture.{error}; {rebuild}") from None
        return cls(mixture, sources, base_dir)


def _recorded(kind: type, table: Mapping[str, Any], where: str) -> Any:
    """A recorded table as ``kind``: its keys as the dataclass takes them (an unknown or missing one is the
    TypeError ``kind(**table)`` raises), then each value's type (``bins = "8"`` is refused, not kept)."""
    value = kind(**table)
    from_table(kind, table, where, fields_only=True, numbers_as_written=True)
    return value
