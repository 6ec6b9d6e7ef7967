"""Shipped recipes parse; the embedded demo builds from generated data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kidata.pipelines.recipe import load_recipe, parse_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


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


@pytest.mark.slow
def test_demo_recipe_builds_from_generated_data(tmp_path):
    pytest.importorskip("h5py")
    from kidata.demo import write_robot_demos, write_vqa_set
    from kidata.pipelines.build import build
    from kidata.pipelines.verify import verify

    write_robot_demos(tmp_path / "demo-data" / "robot", demos_per_task=2, steps=24)
    write_vqa_set(tmp_path / "demo-data" / "vqa", count=4)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "demo.toml").write_text((PIPELINES / "demo.toml").read_text())
    recipe = load_recipe(tmp_path / "pipelines" / "demo.toml")
    manifest = build(recipe, str(tmp_path / "out"), progress=False)
    robot, vqa = manifest["sources"]
    assert (robot["episodes"], robot["samples"]) == (8, 8 * 24)
    assert (vqa["episodes"], vqa["samples"]) == (8, 8)
    assert verify(str(tmp_path / "out")) == []
