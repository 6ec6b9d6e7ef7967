"""The recipe builder the tests and benchmarks share (tests/support/recipes.py): the TOML it writes reads
back to the tables it was given, key order included, so a recipe built here is the recipe written by hand."""

from __future__ import annotations

import json
import math

import tomllib
from support.recipes import TEST_MIXTURE, RecipeDraft, mixture_recipe, source, toml_text


def test_the_toml_it_writes_reads_back_to_the_same_tables_in_the_same_order():
    tables = {"mixture": {"name": "mix \"quoted\" ü", "units_per_source": 3, "holdout": 0.25, "fit": True,
                          "fast_tokenizer": {"fit": False, "scale": 10.0, "vocab_size": 300}, "odd key": "x"},
              "sources": [{"name": "a", "reader": "rlds", "tasks": ["reach", "push"], "weight": 1e-05,
                           "mapping": {"cameras": {"base_0": "image"}, "delta": [True, False]}},
                          {"name": "b", "reader": "vqav2", "path": "C:\\data\\vqa", "seed": 0}]}
    read = tomllib.loads(toml_text(tables))
    assert json.dumps(read) == json.dumps(tables)
    assert type(read["mixture"]["units_per_source"]) is int and type(read["mixture"]["fast_tokenizer"]["scale"]) is float


def test_non_finite_numbers_are_written_as_toml_spells_them():
    read = tomllib.loads(toml_text({"mixture": {"a": math.inf, "b": -math.inf, "c": math.nan}}))["mixture"]
    assert read["a"] == math.inf and read["b"] == -math.inf and math.isnan(read["c"])


def test_mixture_settings_change_in_place_and_none_drops_one():
    draft = RecipeDraft(TEST_MIXTURE).with_mixture(holdout=None, max_tokens=64, seed=7)
    assert list(draft.mixture) == ["name", "action_horizon", "image_size", "max_tokens", "units_per_source",
                                   "shard_size_mb", "fast_tokenizer", "seed"]
    assert draft.mixture["max_tokens"] == 64 and TEST_MIXTURE["max_tokens"] == 128


def test_the_test_mixture_over_given_sources_sets_its_units_per_source():
    tables = mixture_recipe(source("scenes", "metaworld_scenes", tasks=["reach"]), units=2, image_size=32).tables()
    assert tables == {"mixture": {"name": "test-mix", "action_horizon": 4, "image_size": 32, "max_tokens": 128,
                                  "holdout": 0.2, "units_per_source": 2, "shard_size_mb": 0.25,
                                  "fast_tokenizer": {"fit": True, "vocab_size": 300, "scale": 10.0}},
                      "sources": [{"name": "scenes", "reader": "metaworld_scenes", "tasks": ["reach"]}]}


def test_a_draft_written_to_a_file_loads_as_the_recipe_it_describes(tmp_path):
    from kidata.pipelines.recipe import load_recipe

    path = RecipeDraft({"name": "m"}, (source("scenes", "metaworld_scenes", tasks=["reach"], weight=0.5),)).write(
        tmp_path / "r.toml")
    recipe = load_recipe(path)
    assert recipe.mixture.name == "m" and recipe.sources[0].name == "scenes" and recipe.sources[0].weight == 0.5
