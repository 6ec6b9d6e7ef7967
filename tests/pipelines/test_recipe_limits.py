"""Every number a recipe sets is checked for type and range where the recipe is read, what a
recipe may ask of a build is bounded, source names are safe folder names, and a recipe file is
read with a size cap: each refusal is one sentence naming the key and the limit."""

from __future__ import annotations

import pytest
import tomllib
from support import recipes

from kidata.pipelines.recipe import RecipeError, load_recipe, parse_recipe


def recipe(mixture: str = "", source: str = "") -> dict:
    """A Meta-World scenes recipe's tables, with ``mixture`` and ``source`` (TOML lines, as a user writes the
    value under test) added to its [mixture] and its one source."""
    return recipes.RecipeDraft({"name": "m", **tomllib.loads(mixture)},
                               (recipes.source("scenes", "metaworld_scenes", tasks=["reach"], **tomllib.loads(source)),)
                               ).tables()


@pytest.mark.parametrize(("line", "message"), [
    ('fast_tokenizer = { fit = true, vocab_size = "512" }', r"fast_tokenizer: vocab_size = '512': expected a whole number$"),
    ("fast_tokenizer = { fit = true, vocab_size = 512.7 }", r"vocab_size = 512.7: expected a whole number$"),
    ("fast_tokenizer = { bins = 1 }", r"bins = 1: it must be a whole number >= 2 and <= 65536"),
    ("shard_size_mb = nan", r"shard_size_mb = nan: it must be a number >= 0.001 and <= 65536"),
    ("step_stride = 0", r"step_stride = 0: it must be a whole number >= 1 and <= 100000"),
    ("step_stride = -2", r"step_stride = -2: it must be a whole number >= 1"),
    ('holdout = "lots"', r"holdout = 'lots': expected a number$"),
    ("holdout = 1.0", r"holdout = 1.0: it must be a number >= 0 and < 1"),
    ("jpeg_quality = 500", r"jpeg_quality = 500: it must be a whole number >= 1 and <= 100"),
    ("seed = -1", r"seed = -1: it must be a whole number >= 0"),
    ("units_per_source = true", r"units_per_source = True: expected a whole number$"),
])
def test_a_mixture_number_of_the_wrong_type_or_range_is_refused_naming_the_key_and_the_limit(line, message):
    with pytest.raises(RecipeError, match=r"^\[mixture\]" + r".*" + message):
        parse_recipe(recipe(line))


@pytest.mark.parametrize("line", ["action_horizon = 100000", "image_size = 100000", "max_tokens = 10000000",
                                  "reservoir_size = 1000000000"])
def test_what_a_recipe_may_ask_of_a_build_is_bounded_naming_the_limit(line):
    key = line.split()[0]
    with pytest.raises(RecipeError, match=rf"\[mixture\]: {key} = \d+: it must be a whole number >= 1 and <= \d+"):
        parse_recipe(recipe(line))


@pytest.mark.parametrize("holdout", ["1.5", "-0.1", '"half"', "nan"])
def test_a_sources_own_holdout_is_range_checked_as_the_mixtures_is(holdout):
    with pytest.raises(RecipeError, match=r"\[\[sources\]\] #1 \(scenes\): holdout = .*(must be a number >= 0 and < 1|"
                                          r"expected a number or nothing)"):
        parse_recipe(recipe(source=f"holdout = {holdout}"))


@pytest.mark.parametrize("name", ["", "manifest.json", "../up", "fast_tokenizer", "_state", "norm_stats", "a\u0000b",
                                  "x" * 65, "-dash"])
def test_a_source_name_that_is_not_a_safe_folder_name_or_is_a_build_output_is_refused(name):
    data = recipe()
    data["sources"][0]["name"] = name
    with pytest.raises(RecipeError, match=r"\[\[sources\]\] #1 .*: name = .*(source names are 1-64 letters|"
                                          r"is a folder or file the build itself writes)"):
        parse_recipe(data)


def test_a_recipe_file_over_the_size_cap_is_refused_without_reading_it_whole(tmp_path):
    from kidata.config import MAX_TOML_BYTES

    big = tmp_path / "big.toml"
    big.write_text('[mixture]\nname = "m"\n' + "#" * MAX_TOML_BYTES)
    with pytest.raises(RecipeError, match=r"big.toml: larger than 1024 KiB; recipes and configs are small TOML files"):
        load_recipe(big)
    with pytest.raises(RecipeError, match=r"/dev/zero: larger than 1024 KiB"):
        load_recipe("/dev/zero")


def test_a_recipe_file_that_is_not_text_is_named(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecipeError, match=r"binary.toml: not UTF-8 text"):
        load_recipe(binary)


@pytest.mark.parametrize(("line", "message"), [("scenes_per_task = 0", r"scenes_per_task = 0: it must be a whole number >= 1"),
                                               ("seed = 1.5", r"seed = 1.5: expected a whole number or nothing"),
                                               ("goal_marker_scale = inf", r"goal_marker_scale = inf: it must be a number")])
def test_a_reader_option_that_is_a_number_is_range_checked_naming_the_source(line, message):
    with pytest.raises(RecipeError, match=r"\[\[sources\]\] #1 \(scenes\): " + message):
        parse_recipe(recipe(source=line))


@pytest.mark.parametrize(("line", "message"), [('pointing = "false"', r"pointing = 'false': expected true or false$"),
                                               ("pointing = 1", r"pointing = 1: expected true or false$"),
                                               ("camera = 3", r"camera = 3: expected a non-empty string without NUL bytes$"),
                                               ('camera = ""', r"camera = '': expected a non-empty string")])
def test_a_reader_switch_or_name_of_the_wrong_type_is_refused_naming_the_source(line, message):
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(scenes\): " + message):
        parse_recipe(recipe(source=line))


@pytest.mark.parametrize("value", ['"lots"', "-0.1", "nan"])
def test_a_metaworld_action_noise_that_is_not_a_finite_non_negative_number_is_refused_where_the_recipe_is_read(value):
    data = recipe()
    data["sources"][0].update(reader="metaworld", action_noise=tomllib.loads(f"v = {value}")["v"])
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(scenes\): action_noise = .*(expected a number or "
                                          r"nothing|it must be a number >= 0 and <= 10)$"):
        parse_recipe(data)


@pytest.mark.parametrize(("second", "message"), [
    ("scenes", r"source #1 has the same name"),
    ("Scenes", r"source #1 is named 'scenes', the same but for case \(one folder on macOS and Windows\)"),
])
def test_two_sources_whose_names_are_one_folder_are_refused_naming_both(second, message):
    data = recipe()
    data["sources"].append({**data["sources"][0], "name": second})
    with pytest.raises(RecipeError, match=rf"^\[\[sources\]\] #2 \({second}\): {message}; a source's name is its folder "
                                          r"of the build, so give each source its own name$"):
        parse_recipe(data)


def test_a_weight_so_large_that_two_sum_to_infinity_is_refused_naming_the_limit():
    data = recipe(source="weight = 1e308")
    data["sources"].append({**data["sources"][0], "name": "more"})
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(scenes\): weight = 1e\+308; weights are finite numbers "
                                          r">= 0 and <= 1e\+06 \(only their ratios count: scale them down\)$"):
        parse_recipe(data)


@pytest.mark.parametrize("path", ['""', "3", '["a", ""]'])
def test_a_path_option_that_is_empty_or_not_a_path_is_refused_rather_than_read_as_a_folder(path):
    data = recipe()
    data["sources"][0] = recipes.source("bridge", "lerobot", path=tomllib.loads(f"v = {path}")["v"])
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(bridge\): path = .*: expected a non-empty path without "
                                          r"NUL bytes$"):
        parse_recipe(data)
