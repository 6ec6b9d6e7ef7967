"""Shipped recipes parse; the embedded demo builds from generated data."""

from __future__ import annotations

import sys

import pytest

from kidata import assets
from kidata.pipelines.recipe import load_recipe, parse_recipe

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

PIPELINES = assets.ROOT / "pipelines"


@pytest.mark.parametrize("name", ["demo", "libero", "droid", "oxe_magic_soup", "ki_cotrain"])
def test_shipped_recipes_parse(name):
    recipe = load_recipe(PIPELINES / f"{name}.toml")
    assert recipe.sources and recipe.sha256 == load_recipe(PIPELINES / f"{name}.toml").sha256


def test_libero_recipe_trains_the_four_suites_jointly():
    recipe = load_recipe(PIPELINES / "libero.toml")
    assert [s.options["dataset"] for s in recipe.sources] == [
        "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops", "libero_10_no_noops"]


def test_ki_cotrain_recipe_mixes_robot_and_web_data():
    recipe = load_recipe(PIPELINES / "ki_cotrain.toml")
    assert {s.reader for s in recipe.sources} == {"rlds", "coco_captions", "vqav2", "pixmo_points", "pixmo_cap"}


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    recipe = parse_recipe({"mixture": {"name": "x"}, "sources": [{"name": "s", "reader": "libero_hdf5", "path": "data/a"}]},
                          base_dir=tmp_path)
    assert recipe.sources[0].options["path"] == str(tmp_path / "data" / "a")


def test_demo_recipe_is_meta_world_rollouts_and_scene_questions():
    recipe = load_recipe(PIPELINES / "demo.toml")
    assert [(s.name, s.reader) for s in recipe.sources] == [("metaworld", "metaworld"),
                                                            ("metaworld_scenes", "metaworld_scenes")]
    assert recipe.sources[0].options["tasks"] == ["drawer-open", "window-open", "window-close"]
    assert recipe.mixture.image_size == 96  # what model/ki_tiny.toml reads
