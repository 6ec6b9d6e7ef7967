"""RLDS reader on tiny datasets in the exact layouts of DROID, LIBERO, fractal and OXE bridge."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="RLDS tests need the 'rlds' extra")

from support import rlds as fx  # noqa: E402
from support.data import shared_path  # noqa: E402

from kidata.sources.base import ReadReport  # noqa: E402
from kidata.sources.datasets.droid import droid_spec  # noqa: E402
from kidata.sources.registry import lookup  # noqa: E402
from kidata.sources.rlds import RldsSource  # noqa: E402
from kidata.sources.spec import spec_from_mapping  # noqa: E402


@pytest.fixture(scope="module")
def droid_dir(tmp_path_factory):
    episodes = [fx.droid_episode(0, 5), fx.droid_episode(1, 4, success=False), fx.droid_episode(2, 6)]
    return fx.write_dataset(tmp_path_factory.mktemp("droid"), "droid_100", fx.droid_features(), {"train": episodes})


@pytest.fixture(scope="module")
def fractal_dir(tmp_path_factory):
    return fx.write_dataset(
        tmp_path_factory.mktemp("fractal"), "fractal20220817_data", fx.fractal_features(),
        {"train": [fx.fractal_episode(0), fx.fractal_episode(1)]},
    )


def read_all(source, **kwargs):
    report = ReadReport()
    return list(source.episodes(report=report, **kwargs)), report


def test_droid_keeps_successful_episodes_with_three_cameras_and_instructions(droid_dir):
    episodes, report = read_all(RldsSource(str(droid_dir), lookup("droid_100")))
    assert [e.metadata["file_path"].split("/")[4] for e in episodes] == ["success", "success"]
    assert report.notices["filtered_unsuccessful"] == 1
    first = episodes[0]
    assert sorted(first.images) == ["base_0", "base_1", "left_wrist_0"]
    assert first.images["base_0"].encoded and first.images["base_0"].frame(0).shape == fx.DROID_IMAGE
    assert first.instructions == ("put the marker in the cup 0", "place marker into cup")
    assert first.fps == 15 and first.state.shape == (5, 8) and first.actions.shape == (5, 8)
    # gripper: DROID 0 = open ... 1 = closed  ->  standardized 1 = open
    np.testing.assert_allclose(first.state[:, 7], 1 - np.linspace(0, 1, 5), atol=1e-6)
    np.testing.assert_allclose(first.actions[:, 7], 1 - np.linspace(0, 1, 5), atol=1e-6)
    np.testing.assert_allclose(first.actions[:, :7], -0.2 * np.arange(5)[:, None].repeat(7, 1), atol=1e-6)


@pytest.mark.parametrize("space,first_dims,expected", [
    ("joint_position", 7, lambda step: 0.01 + step / 10.0),
    ("cartesian_velocity", 6, lambda step: 0.1 * step),
])
def test_droid_action_space_is_selectable(droid_dir, space, first_dims, expected):
    episode = next(RldsSource(str(droid_dir), droid_spec(space, name="droid_100")).episodes())
    assert episode.actions.shape == (5, first_dims + 1)
    np.testing.assert_allclose(episode.actions[:, 0], [expected(s) for s in range(5)], atol=1e-6)


def test_droid_success_filter_can_be_turned_off(droid_dir):
    episodes, _ = read_all(RldsSource(str(droid_dir), droid_spec(name="droid_100", success_only=False)))
    assert len(episodes) == 3


def test_fractal_relative_gripper_commands_become_absolute_openness(fractal_dir):
    episodes, _ = read_all(RldsSource(str(fractal_dir), lookup("fractal20220817_data")))
    assert len(episodes) == 2
    episode = episodes[0]
    assert episode.instructions == ("pick coke can",) and episode.fps == 3
    assert list(episode.images) == ["base_0"]
    # commands [0, +1, 0, 0, -1, 0] (+1 close, -1 open, 0 keep), starting open
    np.testing.assert_array_equal(episode.actions[:, 6], [1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(episode.state[:, 7], [1, 0, 0, 0, 1, 1])  # gripper_closed inverted
    np.testing.assert_allclose(episode.actions[:, 0], 0.01 * np.arange(6), atol=1e-7)


def test_oxe_bridge_copy_with_nested_action_dict(tmp_path):
    features = fx.features_from_json(shared_path("data", "tfds_robotics_dummy", "dummy_data", "bridge", "1.0.0", "features.json"))
    path = fx.write_dataset(tmp_path, "bridge", features, {"train": [fx.oxe_bridge_episode(0), fx.oxe_bridge_episode(1)]})
    episodes, _ = read_all(RldsSource(str(path), lookup("bridge")))
    assert len(episodes) == 2
    episode = episodes[1]
    assert episode.actions.shape == (4, 7) and episode.state.shape == (4, 7)
    np.testing.assert_array_equal(episode.actions[:, 6], [1, 0, 1, 0])  # open_gripper flag
    np.testing.assert_allclose(episode.actions[:, 0], [0, 0.1, 0.2, 0.3], atol=1e-7)
    assert episode.instructions == ("open the drawer",)
    assert episode.images["base_0"].frame(0).shape == (480, 640, 3)


def test_language_table_utf8_codes_decode_with_replacement_and_are_counted(tmp_path):
    features = fx.features_from_json(shared_path(
        "data", "tfds_robotics_dummy", "language_table", "dummy_data", "language_table", "0.0.1", "features.json"))
    episodes = [fx.language_table_episode(0, "push the red star".encode()), fx.language_table_episode(1, b"push \xff block")]
    path = fx.write_dataset(tmp_path, "language_table", features, {"train": episodes})
    read, report = read_all(RldsSource(str(path), lookup("language_table")))
    assert [e.instructions for e in read] == [("push the red star",), ("push \ufffd block",)]
    assert report.notices["non_utf8_instruction"] == 1


def test_work_units_are_disjoint_and_complete(fractal_dir):
    source = RldsSource(str(fractal_dir), lookup("fractal20220817_data"))
    units = source.list_units(5)
    assert len(units) == 2  # never more units than episodes
    ids = [e.episode_id for unit in units for e in source.read(unit)]
    assert ids == ["train-000000", "train-000001"]


def test_missing_key_names_dataset_key_and_existing_keys(fractal_dir):
    spec = spec_from_mapping("my_robot", {
        "cameras": {"base_0": "image"}, "state": ["observation/joint_pos"], "action": ["action/world_vector"], "fps": 5,
        "language": ["observation/natural_language_instruction"],
    })
    with pytest.raises(KeyError, match=r"my_robot.*'observation/joint_pos'.*observation/base_pose_tool_reached"):
        RldsSource(str(fractal_dir), spec).num_episodes()


def test_own_dataset_is_a_key_mapping(fractal_dir):
    spec = spec_from_mapping("my_robot", {
        "cameras": {"base_0": "image"},
        "state": ["observation/base_pose_tool_reached[:3]"],
        "action": ["action/world_vector", "action/gripper_closedness_action|relative_close_to_open"],
        "fps": 3, "language": ["observation/natural_language_instruction"],
    })
    episode = next(RldsSource(str(fractal_dir), spec).episodes())
    assert episode.state.shape == (6, 3) and episode.actions.shape == (6, 4)


def test_bad_episodes_are_quarantined_by_reason(tmp_path):
    nan_episode = fx.fractal_episode(0, world_vector=lambda step: [np.nan if step == 2 else 0.0, 0.0, 0.0])
    short = fx.fractal_episode(1)
    short["steps"] = short["steps"][:1]
    path = fx.write_dataset(tmp_path, "fractal20220817_data", fx.fractal_features(),
                            {"train": [nan_episode, short, fx.fractal_episode(2)]})
    episodes, report = read_all(RldsSource(str(path), lookup("fractal20220817_data")))
    assert [e.episode_id for e in episodes] == ["train-000002"]
    assert report.quarantined.as_dict() == {"nonfinite_actions": 1, "too_short": 1}


def test_truncated_tfrecord_is_an_error_naming_the_file_or_a_counted_failure(fractal_dir, tmp_path):
    import shutil

    copy = tmp_path / "fractal20220817_data" / "1.0.0"
    shutil.copytree(fractal_dir, copy)
    record = next(copy.glob("*.tfrecord*"))
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=record.name):
        list(RldsSource(str(copy), lookup("fractal20220817_data")).episodes())
    report = ReadReport()
    list(RldsSource(str(copy), lookup("fractal20220817_data"), skip_corrupt=True).episodes(report=report))
    assert report.notices["failed_units"] == 1 and report.failed_units == ["fractal20220817_data:train[0:2]"]


def test_statistics_pass_reads_no_frames(droid_dir):
    episode = next(RldsSource(str(droid_dir), lookup("droid_100")).episodes(images=False))
    assert episode.images == {}


def test_language_annotation_sidecar_attaches_subtasks(fractal_dir, tmp_path):
    sidecar = tmp_path / "subtasks.jsonl"
    sidecar.write_text(
        '{"episode_id": "train-000001", "start": 0, "stop": 2, "text": "reach the can"}\n'
        '{"episode_id": "train-000001", "start": 2, "stop": 6, "text": "lift the can"}\n'
    )
    episodes = list(RldsSource(str(fractal_dir), lookup("fractal20220817_data"), annotations=str(sidecar)).episodes())
    assert episodes[0].annotations == ()
    assert [episodes[1].annotation_at(s) for s in range(6)] == ["reach the can"] * 2 + ["lift the can"] * 4


def test_dimension_change_within_a_dataset_is_quarantined(tmp_path):
    import tensorflow_datasets as tfds

    F = tfds.features
    features = F.FeaturesDict({"steps": F.Dataset({
        "observation": F.FeaturesDict({"state": F.Tensor(shape=(None,), dtype=np.float32, encoding="zlib")}),
        "action": F.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
        "language_instruction": F.Text(),
    })})
    def episode(dims):
        return {"steps": [{"observation": {"state": np.zeros(dims, np.float32)}, "action": np.zeros(dims, np.float32),
                           "language_instruction": "wave"} for _ in range(3)]}
    path = fx.write_dataset(tmp_path, "variable", features, {"train": [episode(4), episode(5), episode(4)]})
    spec = spec_from_mapping("variable", {"cameras": {}, "state": ["observation/state"], "action": ["action"], "fps": 10})
    episodes, report = read_all(RldsSource(str(path), spec))
    assert [e.episode_id for e in episodes] == ["train-000000", "train-000002"]
    assert report.quarantined.as_dict() == {"dimension_change": 1}
