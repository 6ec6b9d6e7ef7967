"""The standardization registry covers the named datasets and the magic soup recipe names them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kidata.sources.registry import lookup
from kidata.sources.spec import Part, spec_from_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAGIC_SOUP = Path(__file__).resolve().parents[1] / "pipelines" / "oxe_magic_soup.toml"
REQUIRED = [
    "fractal20220817_data", "kuka", "bridge", "taco_play", "jaco_play", "berkeley_cable_routing", "roboturk",
    "viola", "berkeley_autolab_ur5", "toto", "language_table", "stanford_hydra_dataset_converted_externally_to_rlds",
    "austin_buds_dataset_converted_externally_to_rlds", "nyu_franka_play_dataset_converted_externally_to_rlds",
    "furniture_bench_dataset_converted_externally_to_rlds", "ucsd_kitchen_dataset_converted_externally_to_rlds",
    "austin_sailor_dataset_converted_externally_to_rlds", "austin_sirius_dataset_converted_externally_to_rlds",
    "dlr_edan_shared_control_converted_externally_to_rlds", "iamlab_cmu_pickup_insert_converted_externally_to_rlds",
    "utaustin_mutex", "berkeley_fanuc_manipulation", "cmu_stretch", "bc_z", "fmb_dataset", "dobbe",
    "bridge_dataset", "droid", "droid_100", "libero_spatial_no_noops", "libero_object_no_noops",
    "libero_goal_no_noops", "libero_10_no_noops",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_entry_exists_with_cameras_actions_and_a_rate(name):
    spec = lookup(name)
    assert spec.cameras and spec.action and spec.fps > 0


def test_magic_soup_recipe_names_registry_entries_with_positive_weights():
    recipe = tomllib.loads(MAGIC_SOUP.read_text())
    assert len(recipe["sources"]) == 26
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
