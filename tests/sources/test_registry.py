"""The standardization registry covers the named datasets and the magic soup recipe names them."""

from __future__ import annotations

import sys

import pytest

from kidata import assets
from kidata.sources import registry
from kidata.sources.registry import lookup, open_source, register_reader
from kidata.sources.spec import Part, spec_from_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAGIC_SOUP = assets.ROOT / "pipelines" / "oxe_magic_soup.toml"
REQUIRED = [
    "fractal20220817_data", "kuka", "bridge", "taco_play", "jaco_play", "berkeley_cable_routing", "roboturk",
    "viola", "berkeley_autolab_ur5", "toto", "language_table", "stanford_hydra_dataset_converted_externally_to_rlds",
    "austin_buds_dataset_converted_externally_to_rlds", "nyu_franka_play_dataset_converted_externally_to_rlds",
    "furniture_bench_dataset_converted_externally_to_rlds", "ucsd_kitchen_dataset_converted_externally_to_rlds",
    "austin_sailor_dataset_converted_externally_to_rlds", "austin_sirius_dataset_converted_externally_to_rlds",
    "dlr_edan_shared_control_converted_externally_to_rlds", "iamlab_cmu_pickup_insert_converted_externally_to_rlds",
    "utaustin_mutex", "berkeley_fanuc_manipulation", "cmu_stretch", "bc_z", "fmb_dataset", "dobbe",
    "bridge_dataset", "droid", "droid_100", "nyu_door_opening_surprising_effectiveness",
    "libero_spatial_no_noops", "libero_object_no_noops",
    "libero_goal_no_noops", "libero_10_no_noops",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_entry_exists_with_cameras_actions_and_a_rate(name):
    spec = lookup(name)
    assert spec.cameras and spec.action and spec.fps > 0


@pytest.mark.parametrize("recipe_name,count", [("oxe_magic_soup", 25), ("oxe_magic_soup_plus", 27)])
def test_magic_soup_recipes_name_registry_entries_with_positive_weights(recipe_name, count):
    recipe = tomllib.loads((MAGIC_SOUP.parent / f"{recipe_name}.toml").read_text())
    assert len(recipe["sources"]) == count
    for source in recipe["sources"]:
        assert lookup(source["dataset"]).name == source["dataset"]
        assert source["weight"] > 0


def test_unknown_entry_suggests_the_nearest():
    with pytest.raises(KeyError, match="fractal20220817_data"):
        lookup("fractal2022")


def test_part_notation():
    assert Part.parse("observation/state[:6]") == Part("observation/state", None, 6, "identity")
    assert Part.parse("action[6:7]|pm1_close_to_open") == Part("action", 6, 7, "pm1_close_to_open")
    with pytest.raises(ValueError, match="did you mean 'close_to_open'"):
        Part.parse("action|close_to_opn")


def test_mapping_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ValueError, match="unknown key 'camera'.*did you mean 'cameras'"):
        spec_from_mapping("mine", {"camera": {}, "state": [], "action": ["action"], "fps": 10})


def test_reader_table_knows_every_shipped_reader_and_its_kind():
    kinds = {name: entry.kind for name, entry in registry.readers().items()}
    assert kinds == {"rlds": "robot", "libero_hdf5": "robot", "lerobot": "robot", "metaworld": "robot", "coco_captions": "vlm",
                     "coco_detection": "vlm", "vqav2": "vlm", "pixmo_cap": "vlm", "pixmo_points": "vlm",
                     "pixmo_ask": "vlm", "metaworld_scenes": "vlm"}


def test_loc_tokens_are_declared_by_the_readers_that_emit_them():
    uses = {name: entry.uses_loc_tokens({}) for name, entry in registry.readers().items()}
    assert sorted(n for n, used in uses.items() if used) == ["coco_detection", "pixmo_points"]
    assert registry.reader("metaworld_scenes").uses_loc_tokens({"pointing": True})


def test_a_reader_registered_by_its_own_module_is_usable_in_a_recipe(tmp_path):
    from kidata.pipelines.recipe import parse_recipe

    @register_reader("test_csv_robot", kind="robot", options=("path", "delimiter"), paths=("path",))
    def open_csv(options, *, name, image_size, seed=0):
        return ("opened", options["path"], options.get("delimiter", ","), name)

    try:
        recipe = parse_recipe({"mixture": {"name": "m"}, "sources": [
            {"name": "mine", "reader": "test_csv_robot", "path": "episodes.csv", "delimiter": ";"}]}, base_dir=tmp_path)
        source = recipe.sources[0]
        assert source.kind == "robot" and source.options["path"] == str(tmp_path / "episodes.csv")
        assert registry.open_reader("test_csv_robot", source.options, name="mine", image_size=64) == (
            "opened", str(tmp_path / "episodes.csv"), ";", "mine")
    finally:
        registry._READERS.pop("test_csv_robot")


def test_a_second_reader_of_the_same_name_is_refused():
    with pytest.raises(ValueError, match="reader 'rlds' is registered twice"):
        register_reader("rlds", kind="robot", options=("path",))(lambda options, **_: None)


def test_opening_a_source_with_an_unknown_option_names_the_nearest():
    with pytest.raises(KeyError, match="unknown option 'datset' \\(did you mean 'dataset'\\?\\)"):
        open_source("rlds", path="/nowhere", datset="bridge_dataset")
