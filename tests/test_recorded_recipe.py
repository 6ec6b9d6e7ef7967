"""The recipe a manifest records, read back typed (``kidata.recipe.Recipe``): the same canonical
form and sha256 the build wrote, readable without the build's source readers."""

from __future__ import annotations

import json

import pytest

from kidata import assets
from kidata.manifest import Encoding, Manifest, ManifestMismatch, TokenizerRef
from kidata.pipelines.recipe import load_recipe
from kidata.recipe import Recipe, SourceConfig

ENCODING = Encoding("text", "pi05", 10, 4, 64, 128, "quantile", "openpi", 300, (100, 199))


def recorded(name: str) -> Manifest:
    """A manifest of the shipped recipe ``name`` as the build records it."""
    recipe = load_recipe(assets.ROOT / "pipelines" / name)
    return Manifest("0.1", Recipe.of(recipe), recipe.sha256, TokenizerRef("tokenizers/demo-text", "0"),
                    TokenizerRef("fast_tokenizer", "1", "fast"), ENCODING)


@pytest.mark.parametrize("name", ["demo.toml", "metaworld.toml", "oxe_magic_soup.toml"])
def test_a_manifests_recipe_reads_back_typed_with_the_canonical_form_and_sha256_the_build_wrote(name):
    manifest = recorded(name)
    written = json.loads(manifest.dumps())
    assert written["recipe"] == load_recipe(assets.ROOT / "pipelines" / name).canonical()
    again = Manifest.from_json(written)
    assert isinstance(again.recipe, Recipe) and again.recipe.sha256 == manifest.recipe_sha256
    assert again.dumps() == manifest.dumps()


def test_a_recorded_sources_reader_options_are_its_keys_beyond_name_reader_weight_and_holdout():
    recipe = Manifest.from_json(json.loads(recorded("metaworld.toml").dumps())).recipe
    (source,) = recipe.sources_read_by("metaworld")
    assert type(source) is SourceConfig and source.options["tasks"] == load_recipe(
        assets.ROOT / "pipelines" / "metaworld.toml").source(source.name).options["tasks"]
    assert not {"name", "reader", "weight", "holdout"} & set(source.options)


def test_a_recorded_recipe_with_a_mixture_field_this_version_does_not_know_is_refused_naming_the_file():
    written = json.loads(recorded("demo.toml").dumps())
    written["recipe"]["mixture"]["colour"] = "blue"
    with pytest.raises(ManifestMismatch, match=r"^runs/a/manifest.json: the recorded recipe lacks or has an unknown "
                                               r"field \(.*'colour'\); rebuild the mixture with this kidata version$"):
        Manifest.from_json(written, origin="runs/a/manifest.json")


@pytest.mark.parametrize(("setting", "message"), [
    (3, r"mixture\.fast_tokenizer = 3: expected a table or a path / hub id"),
    (None, r"mixture\.fast_tokenizer = None: expected a table or a path / hub id"),
    ({"bins": "8"}, r"mixture\.fast_tokenizer\.bins = '8': expected an integer, got str"),
    ({"path": 3}, r"mixture\.fast_tokenizer\.path = 3: expected a string, got int"),
])
def test_a_manifest_whose_fast_tokenizer_was_edited_to_another_type_is_refused_naming_the_file(setting, message):
    written = json.loads(recorded("demo.toml").dumps())
    written["recipe"]["mixture"]["fast_tokenizer"] = setting
    with pytest.raises(ManifestMismatch, match=r"^runs/a/manifest.json: the recorded recipe's " + message +
                                               r"; rebuild the mixture with this kidata version$"):
        Manifest.from_json(written, origin="runs/a/manifest.json")


@pytest.mark.parametrize(("part", "value"), [("mixture", "demo"), ("mixture", [1]), ("sources", 3), ("sources", ["s"])])
def test_a_manifest_whose_recipe_tables_are_not_tables_is_refused_naming_the_file(part, value):
    written = json.loads(recorded("demo.toml").dumps())
    written["recipe"][part] = value
    with pytest.raises(ManifestMismatch, match=r"^runs/a/manifest.json: the recorded recipe is not a \[mixture\] table "
                                               r"and a list of \[\[sources\]\] tables; rebuild the mixture with this "
                                               r"kidata version$"):
        Manifest.from_json(written, origin="runs/a/manifest.json")


def test_a_manifest_whose_encoding_is_not_a_table_is_refused_naming_the_file():
    written = json.loads(recorded("demo.toml").dumps())
    written["encoding"] = "text"
    with pytest.raises(ManifestMismatch, match=r"^runs/a/manifest.json: a field of the manifest is missing or unknown"):
        Manifest.from_json(written, origin="runs/a/manifest.json")
