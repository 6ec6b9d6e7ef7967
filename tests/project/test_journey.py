"""The user's journey without surprises: a mapping file from `kidata export rlds` used by a recipe,
quiet commands, and the silent defaults that used to undermine results now said out loud."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="builds on RLDS need the 'rlds' extra")
torch = pytest.importorskip("torch")

from support.data import shared_path  # noqa: E402
from support.recipes import RecipeDraft, source, write_recipe  # noqa: E402

from kidata.pipelines.build import build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402

BRIDGE_MAPPING = {"cameras": {"base_0": "image_0", "base_1": "image_1"}, "state": ["observation/state"],
                  "action": ["action[:6]", "action[6:7]"], "fps": 5}


def test_a_recipe_mapping_may_be_a_json_file_beside_the_recipe(tmp_path):
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    bridge = shared_path("data", "rlds", "bridge_dataset", "1.0.0")
    (tmp_path / "my_mapping.json").write_text(json.dumps(BRIDGE_MAPPING))
    RecipeDraft({"name": "m"}, (source("mine", "rlds", path=str(bridge), mapping="my_mapping.json"),)
                ).write(tmp_path / "recipe.toml")
    recipe = load_recipe(tmp_path / "recipe.toml")
    assert recipe.sources[0].options["mapping"] == str(tmp_path / "my_mapping.json")
    mine = next(recipe.open(recipe.sources[0]).episodes(images=False))
    registered = next(RldsSource(str(bridge), lookup("bridge_dataset")).episodes(images=False))
    np.testing.assert_array_equal(mine.actions, registered.actions)


def test_a_mapping_file_that_is_not_json_is_named(tmp_path):
    from kidata.sources.registry import open_source

    (tmp_path / "m.json").write_text("{cameras:")
    with pytest.raises(ValueError, match=r"mapping .*m.json: not valid JSON"):
        open_source("rlds", path=str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")),
                    mapping=str(tmp_path / "m.json"))


def test_a_build_prints_no_tensorflow_banner(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", units=1)
    result = subprocess.run([sys.executable, "-m", "kidata.cli", "build", str(recipe), "--out", str(tmp_path / "o"),
                             "--quiet"], capture_output=True, text=True, check=True)
    assert "oneDNN" not in result.stderr + result.stdout and "port.cc" not in result.stderr


def test_a_finished_build_run_again_keeps_the_report_of_the_work(tmp_path, capsys):
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", units=1))
    build(recipe, str(tmp_path / "o"), progress=False)
    report = (tmp_path / "o" / "build_report.json").read_bytes()
    build(recipe, str(tmp_path / "o"), progress=True)
    assert (tmp_path / "o" / "build_report.json").read_bytes() == report
    assert "is already built from this recipe; nothing to do" in capsys.readouterr().err


def test_a_camera_the_model_does_not_read_is_said_once_in_one_line_not_as_a_python_warning(capsys, monkeypatch):
    import warnings

    from kidata.loader import collate as collate_module

    monkeypatch.setattr(collate_module, "_NOTED_CAMERAS", set())
    sample = {"tokens": np.array([1, 2]), "ar": np.zeros(2, bool), "loss": np.zeros(2, bool),
              "images": {"base_0": np.zeros((8, 8, 3), np.uint8), "base_1": np.zeros((8, 8, 3), np.uint8)},
              "state": None, "meta": {"prefix_length": 2}, "source_index": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            collate_module.collate([sample], max_tokens=4, action_dim=2, action_horizon=2, state_dim=2, cameras=("base_0",))
    assert capsys.readouterr().err == ("kidata: images of camera(s) ['base_1'] are in the mixture but not read: the model "
                                       "reads ['base_0'] (--data.cameras, or data.cameras in the preset)\n")


def test_training_on_a_mixture_without_a_held_out_split_says_so(tmp_path, capsys):
    from support.training import config

    from kidata.training.trainer import train

    path = write_recipe(tmp_path / "r.toml", units=1, holdout=None)
    build(load_recipe(path), str(tmp_path / "o"), progress=False)
    train(config(str(tmp_path / "o" / "manifest.json"), train={"steps": 1}, eval={"every": 0}), tmp_path / "run")
    assert "has no held-out split (the recipe's [mixture] holdout is 0.0, and no record fell under it)" in capsys.readouterr().err


def test_export_rlds_prints_no_download_announcement(tmp_path):
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    episodes = list(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")
                               ).episodes())[:2]
    script = ("import sys, pickle; from kidata.pipelines.export import export_rlds; "
              "export_rlds(pickle.load(sys.stdin.buffer), sys.argv[1], name='mine')")
    import pickle

    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], input=pickle.dumps(episodes),
                            capture_output=True, check=True)
    assert b"Downloading and preparing" not in result.stdout + result.stderr
    assert (tmp_path / "out" / "mine" / "1.0.0" / "kidata_mapping.json").exists()


def test_export_rlds_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch):
    import tempfile

    from kidata.pipelines.export import export_rlds
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    episodes = list(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")
                               ).episodes())[:2]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    export_rlds(episodes, tmp_path / "out", name="mine")
    assert (tmp_path / "out" / "mine" / "1.0.0" / "kidata_mapping.json").exists()
    assert list(scratch.iterdir()) == []
