"""Recipes: a TOML file with one ``[mixture]`` table and one ``[[sources]]`` table per source.

Parsed into the frozen dataclasses of ``kidata.recipe`` (extended here with what building needs:
each source's reader); an unknown key is an error naming the key and the nearest valid one;
relative paths resolve against the recipe file's folder. ``canonical()`` is the recipe as the
build sees it (defaults filled in, paths resolved), which the manifest records and hashes.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from kidata import recipe as recorded
from kidata.config import check_keys, field_choices, from_table, nearest, read_toml
from kidata.delta import DeltaMaskError, parse_delta_mask
from kidata.pipelines.recipe_limits import (
    FAST_NUMBERS,
    MAX_CHUNK_VALUES,
    MAX_SOURCE_WEIGHT,
    MIXTURE_NUMBERS,
    SOURCE_NUMBERS,
    check_number,
    check_source_name,
    check_source_option,
    check_text,
)
from kidata.recipe import ActionBins, FastFit, FastFrom, FastSetting, MixtureConfig, fast_setting_kind
from kidata.sources import registry
from kidata.sources.registry import COMMON_SOURCE_KEYS

__all__ = ["MixtureConfig", "Recipe", "RecipeError", "SourceConfig", "load_recipe", "parse_recipe"]


class RecipeError(ValueError):
    """A recipe that cannot be built as written."""


class SourceConfig(recorded.SourceConfig):
    """A recipe source as the build opens it: its reader's kind and options come from the registry."""

    @property
    def kind(self) -> str:
        """"robot" or "vlm": the reader's."""
        return registry.reader(self.reader).kind

    @property
    def uses_loc_tokens(self) -> bool:
        return registry.reader(self.reader).uses_loc_tokens(self.options)


class Recipe(recorded.Recipe):
    """A recipe as the build runs it: its sources open their readers."""

    source_type = SourceConfig
    sources: tuple[SourceConfig, ...]

    def open(self, source: SourceConfig):
        """The reader of one of this recipe's sources, opened from its options (the mixture's image
        size and seed are the defaults of readers that render or simulate)."""
        return registry.open_reader(source.reader, source.reader_options, name=source.name,
                                    image_size=self.mixture.image_size, seed=self.mixture.seed)


def parse_recipe(data: Mapping[str, Any], *, base_dir: str | Path = ".") -> Recipe:
    check_keys(data, ("mixture", "sources"), "", error=RecipeError, noun="top-level table")
    if "mixture" not in data:
        raise RecipeError("recipe lacks the [mixture] table")
    if not isinstance(data["mixture"], Mapping):
        raise RecipeError(f"mixture = {data['mixture']!r}: expected the [mixture] table of settings")
    mixture = _mixture(dict(data["mixture"]))
    base = Path(base_dir).resolve()
    sources = []
    listed = data.get("sources", [])
    if not isinstance(listed, list) or not all(isinstance(table, Mapping) for table in listed):
        raise RecipeError(f"sources = {listed!r}: expected [[sources]] tables, one per source")
    for index, table in enumerate(listed):
        table = dict(table)
        where = f"[[sources]] #{index + 1} ({table.get('name', '?')})"
        if "name" not in table or "reader" not in table:
            raise RecipeError(f"{where}: 'name' and 'reader' are required")
        reader = table["reader"]
        known = registry.readers()
        if not isinstance(reader, str):
            raise RecipeError(f"{where}: reader = {reader!r}: expected a reader's name, one of {sorted(known)}")
        if reader not in known:
            raise RecipeError(f"{where}: unknown reader {reader!r}{nearest(reader, tuple(known), noun='readers')}")
        entry = known[reader]
        allowed = COMMON_SOURCE_KEYS + entry.options
        options = {}
        if entry.kind == "robot" and "mapping" not in allowed:  # mapping = { delta = [...] } fits every robot reader
            allowed = allowed + ("mapping",)
            _check_delta_only_mapping(where, reader, table.get("mapping"))
        if isinstance(table.get("mapping"), Mapping) and "delta" in table["mapping"]:
            if entry.kind != "robot":
                raise RecipeError(f"{where}: mapping.delta makes robot actions relative to the state; reader "
                                  f"{reader!r} yields VLM examples, which have neither")
            try:
                delta = parse_delta_mask(table["mapping"]["delta"], where=f"{where} mapping")
            except DeltaMaskError as error:
                raise RecipeError(str(error)) from None
            table["mapping"] = {**table["mapping"], "delta": list(delta)}
        for key, value in table.items():
            if key not in allowed:
                raise RecipeError(f"{where}: unknown key {key!r} for reader {reader!r}{nearest(key, allowed)}")
            if key in COMMON_SOURCE_KEYS:
                continue
            if key in entry.path_options:
                for path in value if isinstance(value, list) else [value]:
                    # "" would resolve to the recipe's folder, a number to a file of that name
                    if not isinstance(path, (str, Mapping)) or (isinstance(path, str) and (not path or "\0" in path)):
                        raise RecipeError(f"{where}: {key} = {value!r}: expected a non-empty path without NUL bytes")
                # a path option may also take an inline table (rlds ``mapping``): only strings are paths
                value = ([_resolve(base, v) for v in value] if isinstance(value, list)
                         else _resolve(base, value) if isinstance(value, str) else value)
            options[key] = value
        check_source_name(where, table["name"], RecipeError)
        for key, value in options.items():
            if key in SOURCE_NUMBERS:
                check_number(f"{where}: ", key, value, SOURCE_NUMBERS[key], RecipeError)
            check_source_option(f"{where}: ", key, value, RecipeError)
        check_number(f"{where}: ", "holdout", table.get("holdout"), (*MIXTURE_NUMBERS["holdout"][:4], True), RecipeError)
        sources.append(SourceConfig(table["name"], reader, _weight(where, table.get("weight", 1.0)),
                                    table.get("holdout"), options))
    _check_distinct_names([s.name for s in sources])
    if not sources:
        raise RecipeError("recipe has no [[sources]]")
    return Recipe(mixture, tuple(sources), str(base))


def _check_distinct_names(names: list[str]) -> None:
    """Each source's name is a folder and a shard prefix of the build: two names that differ only in case are one
    folder on a case-insensitive file system (macOS, Windows), where their shards would overwrite each other."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        first = seen.setdefault(name.lower(), index)
        if first != index:
            same = ("has the same name" if names[first] == name else
                    f"is named {names[first]!r}, the same but for case (one folder on macOS and Windows)")
            raise RecipeError(f"[[sources]] #{index + 1} ({name}): source #{first + 1} {same}; a source's name is its "
                              "folder of the build, so give each source its own name")


def _check_delta_only_mapping(where: str, reader: str, mapping: Any) -> None:
    """A reader without a key mapping of its own still takes ``mapping = { delta = [...] }``."""
    if mapping is not None and (not isinstance(mapping, Mapping) or set(mapping) != {"delta"}):
        keys = sorted(mapping) if isinstance(mapping, Mapping) else mapping
        raise RecipeError(f"{where}: reader {reader!r} has no key mapping, so its mapping may hold only 'delta' "
                          f"(got {keys!r})")


def _weight(where: str, value: Any) -> float:
    """A finite, non-negative sampling weight (0 builds the source but never samples it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{where}: weight = {value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise RecipeError(f"{where}: weight = {value!r}; weights are finite numbers >= 0")
    if value > MAX_SOURCE_WEIGHT:
        raise RecipeError(f"{where}: weight = {value!r}; weights are finite numbers >= 0 and <= {MAX_SOURCE_WEIGHT:g} "
                          "(only their ratios count: scale them down)")
    return float(value)


def _resolve(base: Path, value: str) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def _mixture(table: dict[str, Any]) -> MixtureConfig:
    """``[mixture]`` through the one config path, its numbers (checked against the recipe limits
    first, whose refusals name the range) recorded as written."""
    check_keys(table, [f.name for f in fields(MixtureConfig)], "[mixture]: ", error=RecipeError)
    if "name" not in table:
        raise RecipeError("[mixture]: 'name' is required")
    for key, spec in MIXTURE_NUMBERS.items():
        if key in table:
            check_number("[mixture]: ", key, table[key], spec, RecipeError)
    for key in ("name", "text_tokenizer"):
        if key in table:
            check_text("[mixture]: ", key, table[key], RecipeError)
    for key, (allowed, _) in field_choices(MixtureConfig).items():  # a choice given as a number is named with the choices
        if key in table and (not isinstance(table[key], str) or table[key] not in allowed):
            raise RecipeError(f"[mixture]: {key} = {table[key]!r}: expected one of {allowed}")
    if "fast_tokenizer" in table:
        table["fast_tokenizer"] = _fast_setting(table["fast_tokenizer"])
    mixture = from_table(MixtureConfig, table, "[mixture]: ", error=RecipeError, numbers_as_written=True)
    _check_mixture(mixture)
    return mixture


def _fast_setting(value: Any) -> FastSetting:
    """``fast_tokenizer``: a path / hub id as written, or its table as the kind its keys name."""
    if isinstance(value, str):
        check_text("[mixture]: ", "fast_tokenizer", value, RecipeError)
        return value
    if not isinstance(value, Mapping):
        raise RecipeError(f"[mixture]: fast_tokenizer = {value!r}: expected a table "
                          "({ fit = true, ... }) or a path / hub id")
    kind, where = fast_setting_kind(value), "[mixture].fast_tokenizer: "
    check_keys(value, [f.name for f in fields(kind)], where, error=RecipeError)
    for key, number in value.items():
        if key in FAST_NUMBERS:
            check_number(where, key, number, FAST_NUMBERS[key], RecipeError)
    setting = from_table(kind, value, where, error=RecipeError, numbers_as_written=True)
    if isinstance(setting, FastFrom):
        check_text(where, "path", setting.path, RecipeError)
    if isinstance(setting, FastFit) and setting.fit is False:
        raise RecipeError(f"{where}fit = false: a table without 'bins' or 'path' fits FAST on the build's actions; "
                          "leave fit out (or true) to fit, or write { path = \"...\" } for a fitted tokenizer or "
                          "{ bins = 256 } for naive binning")
    if isinstance(setting, FastFit) and setting.scale is not None and setting.target_rmse is not None:
        raise RecipeError(f"{where}scale = {setting.scale!r} and target_rmse = {setting.target_rmse!r}: target_rmse "
                          "picks the scale, so the scale would be ignored; keep one of them")
    return setting


def _check_mixture(mixture: MixtureConfig) -> None:
    """What a mixture's fields mean together: the combinations the build refuses."""
    if mixture.prompt_format == "pi0" and mixture.state_encoding != "continuous":
        raise RecipeError(f"[mixture]: prompt_format = \"pi0\" gives the state to the action expert as a vector, "
                          f"state_encoding = {mixture.state_encoding!r} writes it into the prompt; set "
                          "state_encoding = \"continuous\"")
    defaults = {f.name: f.default for f in fields(MixtureConfig)}
    for key, owner, needed in (("fast_token_offset", "fast_token_rule", "offset"),
                               ("fast_token_skip", "fast_token_rule", "openpi"),
                               ("special_state_first", "state_encoding", "special")):
        if getattr(mixture, key) != defaults[key] and getattr(mixture, owner) != needed:
            raise RecipeError(f"[mixture]: {key} = {getattr(mixture, key)!r} applies only with {owner} = \"{needed}\", "
                              f"and {owner} is {getattr(mixture, owner)!r}, so it would be ignored; set {owner} = "
                              f"\"{needed}\" or drop {key}")
    setting = mixture.fast_tokenizer
    if isinstance(setting, ActionBins) and setting.stride is not None and setting.stride > mixture.action_horizon:
        raise RecipeError(f"[mixture].fast_tokenizer: stride = {setting.stride} exceeds action_horizon = "
                          f"{mixture.action_horizon}, so every chunk would keep only its first step; choose a stride "
                          f"<= {mixture.action_horizon}")
    if mixture.action_horizon * (mixture.action_dim or 1) > MAX_CHUNK_VALUES:
        raise RecipeError(f"[mixture]: action_horizon {mixture.action_horizon} x action_dim {mixture.action_dim} "
                          f"exceeds {MAX_CHUNK_VALUES} values per action chunk")


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file; a relative path that does not exist is looked up among the shipped
    recipes (``pipelines/demo.toml`` works from any folder)."""
    data, path = read_toml(path, error=RecipeError, kind="pipelines")
    try:
        return parse_recipe(data, base_dir=path.parent)
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from error
