"""A recipe's ``[mixture]`` and its ``fast_tokenizer`` table are read typed, through the one config
path (``kidata.config.from_table``), and recorded as written: a recipe's sha256 is the identity of
every build made from it, so reading it typed must not change it."""

from __future__ import annotations

import pytest
import tomllib

from kidata.pipelines.recipe import RecipeError, parse_recipe
from kidata.recipe import ActionBins, FastFit, FastFrom, Recipe

SOURCES = [{"name": "s", "reader": "metaworld", "tasks": ["reach"]}]


def mixture(line: str = "") -> dict:
    """A recipe whose [mixture] holds ``line`` (TOML, as a user writes it) beside its name."""
    return {"mixture": {"name": "m", **tomllib.loads(line)}, "sources": SOURCES}


@pytest.mark.parametrize(("line", "setting"), [
    ("fast_tokenizer = { fit = true, vocab_size = 512, scale = 10 }", FastFit(fit=True, vocab_size=512, scale=10)),
    ("fast_tokenizer = { vocab_size = 512 }", FastFit(vocab_size=512)),
    ("fast_tokenizer = { bins = 256, stride = 5 }", ActionBins(bins=256, stride=5)),
    ('fast_tokenizer = { path = "org/name" }', FastFrom(path="org/name")),
    ('fast_tokenizer = "org/name"', "org/name"),
    ("", FastFit(fit=True, vocab_size=1024, scale=10.0)),
])
def test_each_form_of_fast_tokenizer_reads_as_its_own_type(line, setting):
    assert parse_recipe(mixture(line)).mixture.fast_tokenizer == setting


def test_only_the_keys_a_fit_table_sets_reach_the_fit():
    setting = parse_recipe(mixture("fast_tokenizer = { fit = true, scale = 4 }")).mixture.fast_tokenizer
    assert setting.fit_options() == {"scale": 4}


# sha256 values recorded by builds before the mixture was read typed: integers in float fields stay integers
@pytest.mark.parametrize(("line", "sha256"), [
    ("fast_tokenizer = { fit = true, vocab_size = 512, scale = 10 }",
     "b1458cc4d793e21c6f899971f767192f2eeb37efe2d06bb189230420034325ab"),
    ("fast_tokenizer = { bins = 256, stride = 5 }", "c10f7b05583c64447e18ab72c4d46676ecdd95d8bb7c33c5002de5a3c63505d0"),
    ('fast_tokenizer = "org/name"', "8f0049865928f1e75324d105762a23e2f9c80dd669c9977d9719b1cef6236462"),
    ("holdout = 0", "08b70e87bc66b66bf7063b263473e236c67f4e6e11ee1026a8352deb6232ed15"),
    ("", "39578896171de4f1ec572c412e29bc0a08d0aed49d160f4ec78f39b83de3ff8c"),
])
def test_a_recipe_is_recorded_as_written_so_its_sha256_is_the_one_earlier_builds_recorded(line, sha256):
    assert parse_recipe(mixture(line)).sha256 == sha256


def test_an_integer_written_in_a_float_field_is_recorded_as_an_integer():
    canonical = parse_recipe(mixture("holdout = 0\nfast_tokenizer = { scale = 10 }")).canonical()["mixture"]
    assert (canonical["holdout"], canonical["fast_tokenizer"]) == (0, {"scale": 10})
    assert type(canonical["holdout"]) is int and type(canonical["fast_tokenizer"]["scale"]) is int


@pytest.mark.parametrize("line", ["fast_tokenizer = { fit = true, scale = 10 }", "fast_tokenizer = { bins = 8 }",
                                  'fast_tokenizer = { path = "org/name" }', 'fast_tokenizer = "org/name"'])
def test_a_recorded_recipe_reads_back_with_the_same_typed_fast_setting(line):
    recipe = parse_recipe(mixture(line))
    again = Recipe.from_canonical(recipe.canonical())
    assert again.mixture == recipe.mixture and again.sha256 == recipe.sha256


@pytest.mark.parametrize(("line", "message"), [
    ('fast_tokenizer = { fit = "yes" }', r"\.fast_tokenizer: fit = 'yes': expected true or false or nothing, got str$"),
    ("fast_tokenizer = { path = 3 }", r"\.fast_tokenizer: path = 3: expected a string, got int$"),
    ('fast_tokenizer = { bins = 8, path = "x" }',
     r"\.fast_tokenizer: unknown key 'path' \(valid keys: \['bins', 'stride'\]\)$"),
    ("fast_tokenizer = 3", r": fast_tokenizer = 3: expected a table \(\{ fit = true, ... \}\) or a path / hub id$"),
])
def test_a_fast_tokenizer_value_of_the_wrong_type_or_key_is_refused_naming_it(line, message):
    with pytest.raises(RecipeError, match=r"^\[mixture\]" + message):
        parse_recipe(mixture(line))


@pytest.mark.parametrize(("tables", "message"), [
    ({"mixture": "m", "sources": SOURCES}, r"^mixture = 'm': expected the \[mixture\] table of settings$"),
    ({"mixture": {"name": "m"}, "sources": {"name": "s"}},
     r"^sources = \{'name': 's'\}: expected \[\[sources\]\] tables, one per source$"),
    ({"mixture": {"name": "m"}, "sources": [1]}, r"^sources = \[1\]: expected \[\[sources\]\] tables, one per source$"),
])
def test_a_recipe_whose_mixture_or_sources_are_not_tables_is_refused_in_one_sentence(tables, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(tables)


@pytest.mark.parametrize("reader", [3, ["metaworld"], {"name": "metaworld"}])
def test_a_reader_that_is_not_a_readers_name_is_refused_naming_the_source(reader):
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(s\): reader = .*: expected a reader's name, one of "
                                          r"\[.*'metaworld'.*\]$"):
        parse_recipe({"mixture": {"name": "m"}, "sources": [{**SOURCES[0], "reader": reader}]})


@pytest.mark.parametrize(("line", "where"), [('fast_tokenizer = ""', r"\[mixture\]: fast_tokenizer = ''"),
                                             ('fast_tokenizer = { path = "" }', r"\[mixture\]\.fast_tokenizer: path = ''"),
                                             (r'fast_tokenizer = "org/\u0000name"', r"\[mixture\]: fast_tokenizer = 'org/\\x00name'")])
def test_an_empty_fast_tokenizer_path_is_refused_rather_than_read_as_the_recipes_folder(line, where):
    with pytest.raises(RecipeError, match="^" + where + ": expected a non-empty string without NUL bytes$"):
        parse_recipe(mixture(line))


def test_fit_false_is_refused_since_a_table_without_bins_or_path_fits_fast_either_way():
    with pytest.raises(RecipeError, match=r"^\[mixture\]\.fast_tokenizer: fit = false: a table without 'bins' or 'path' "
                                          r"fits FAST on the build's actions; leave fit out \(or true\) to fit, or write "
                                          r"\{ path = \"...\" \} for a fitted tokenizer or \{ bins = 256 \} for naive "
                                          r"binning$"):
        parse_recipe(mixture("fast_tokenizer = { fit = false, vocab_size = 512 }"))


@pytest.mark.parametrize(("line", "message"), [
    ("state_encoding = 1", r"state_encoding = 1: expected one of \('text', 'special', 'continuous'\)$"),
    ('normalization = "zscore"', r"normalization = 'zscore': expected one of \('quantile', .*\)$"),
    ("prompt_format = true", r"prompt_format = True: expected one of \('pi05', 'pi0fast', 'pi0'\)$"),
])
def test_a_choice_that_is_unknown_or_given_as_a_number_is_refused_naming_the_choices(line, message):
    with pytest.raises(RecipeError, match=r"^\[mixture\]: " + message):
        parse_recipe(mixture(line))


def test_a_fit_table_with_both_scale_and_target_rmse_is_refused_since_target_rmse_picks_the_scale():
    with pytest.raises(RecipeError, match=r"^\[mixture\]\.fast_tokenizer: scale = 10 and target_rmse = 0\.01: target_rmse "
                                          r"picks the scale, so the scale would be ignored; keep one of them$"):
        parse_recipe(mixture("fast_tokenizer = { scale = 10, target_rmse = 0.01 }"))


def test_a_bin_stride_longer_than_the_chunk_is_refused_naming_the_horizon():
    with pytest.raises(RecipeError, match=r"^\[mixture\]\.fast_tokenizer: stride = 11 exceeds action_horizon = 10, so "
                                          r"every chunk would keep only its first step; choose a stride <= 10$"):
        parse_recipe(mixture("action_horizon = 10\nfast_tokenizer = { bins = 8, stride = 11 }"))
    assert parse_recipe(mixture("action_horizon = 10\nfast_tokenizer = { bins = 8, stride = 10 }")).mixture.fast_tokenizer \
        == ActionBins(bins=8, stride=10)


@pytest.mark.parametrize(("line", "message"), [
    ("fast_token_offset = 2048",
     r"fast_token_offset = 2048 applies only with fast_token_rule = \"offset\", and fast_token_rule is 'openpi', so it "
     r"would be ignored; set fast_token_rule = \"offset\" or drop fast_token_offset"),
    ('fast_token_rule = "offset"\nfast_token_offset = 2048\nfast_token_skip = 64',
     r"fast_token_skip = 64 applies only with fast_token_rule = \"openpi\""),
    ("special_state_first = 100", r"special_state_first = 100 applies only with state_encoding = \"special\", and "
                                  r"state_encoding is 'text'"),
])
def test_a_setting_its_rule_or_encoding_would_ignore_is_refused_naming_what_it_needs(line, message):
    with pytest.raises(RecipeError, match=r"^\[mixture\]: " + message):
        parse_recipe(mixture(line))
    assert parse_recipe(mixture('state_encoding = "special"\nspecial_state_first = 100')).mixture.special_state_first == 100


def test_an_unknown_reader_is_refused_listing_the_readers_not_keys():
    with pytest.raises(RecipeError, match=r"^\[\[sources\]\] #1 \(s\): unknown reader '' \(readers: \['coco_captions', "):
        parse_recipe({"mixture": {"name": "m"}, "sources": [{**SOURCES[0], "reader": ""}]})
