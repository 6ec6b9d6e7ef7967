"""The OXE registry against the references (Octo's and OpenVLA's standardization transforms), on
tiny TFDS datasets written in each dataset's published layout. Expected values are written by
hand from the references' rules, never computed with our transforms."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="RLDS tests need the 'rlds' extra")

from support import rlds as fx  # noqa: E402

from kidata.sources.registry import lookup  # noqa: E402
from kidata.sources.rlds import RldsSource  # noqa: E402
from kidata.sources.spec import GRIPPER_TRANSFORMS  # noqa: E402

IMAGE = (8, 8, 3)


def features(observation: dict, action, images: tuple[str, ...] = ("image",)) -> object:
    F = fx._tfds().features
    return F.FeaturesDict({"steps": F.Dataset({
        "observation": F.FeaturesDict({**{name: F.Image(shape=IMAGE, encoding_format="png") for name in images},
                                       **observation}),
        "action": action, "language_instruction": F.Text(), **fx._common_steps(F)})})


def episode(observations: list[dict], actions: list, images: tuple[str, ...] = ("image",)) -> dict:
    return {"steps": [{"observation": {**{name: np.zeros(IMAGE, np.uint8) for name in images}, **o}, "action": a,
                       "language_instruction": "do it", **fx._flags(i, len(actions))}
                      for i, (o, a) in enumerate(zip(observations, actions))]}


def read(tmp_path, name: str, feature_spec, steps_observation: list[dict], steps_action: list):
    images = tuple(lookup(name).cameras.values())
    directory = fx.write_dataset(tmp_path, name, feature_spec,
                                 {"train": [episode(steps_observation, steps_action, images)]})
    return next(RldsSource(str(directory), lookup(name)).episodes())


@pytest.mark.parametrize("commands,expected", [
    ([0, 0, -1, 0, 1, 0], [0, 0, 1, 1, 0, 0]),   # closed before the first (open) command
    ([-1, 0, 0.05, 0], [1, 1, 1, 1]),             # |0.05| <= 0.1 keeps the state
    ([0, 1, 0, 0, -1, 0], [1, 0, 0, 0, 1, 1]),     # open before the first (close) command
    ([0, 0.02, -0.05], [1, 1, 1]),                 # no command: open throughout
])
def test_relative_gripper_commands_follow_the_references_rel2abs(commands, expected):
    openness = GRIPPER_TRANSFORMS["relative_close_to_open"](np.array(commands, np.float32)[:, None])
    assert openness[:, 0].tolist() == expected


def test_kuka_reads_feature_names_that_contain_a_slash(tmp_path):
    F = fx._tfds().features
    spec = features({"clip_function_input/base_pose_tool_reached": F.Tensor(shape=(7,), dtype=np.float32),
                     "gripper_closed": F.Tensor(shape=(1,), dtype=np.float32),
                     "natural_language_instruction": F.Text()},
                    F.FeaturesDict({"world_vector": F.Tensor(shape=(3,), dtype=np.float32),
                                    "rotation_delta": F.Tensor(shape=(3,), dtype=np.float32),
                                    "gripper_closedness_action": F.Tensor(shape=(1,), dtype=np.float32)}))
    poses = [np.arange(7, dtype=np.float32) + step for step in range(3)]
    observations = [{"clip_function_input/base_pose_tool_reached": p, "gripper_closed": [float(s == 1)],
                     "natural_language_instruction": "pick"} for s, p in enumerate(poses)]
    actions = [{"world_vector": [0.1 * s, 0, 0], "rotation_delta": [0, 0, 0], "gripper_closedness_action": [c]}
               for s, c in enumerate([0.0, 1.0, -1.0])]
    result = read(tmp_path, "kuka", spec, observations, actions)
    np.testing.assert_array_equal(result.state[:, :7], np.stack(poses))
    np.testing.assert_array_equal(result.state[:, 7], [1, 0, 1])  # gripper_closed -> openness
    np.testing.assert_array_equal(result.actions[:, 6], [1, 0, 1])  # open before the first (close) command


def test_kuka_pose_stored_as_zlib_compressed_float32_bytes_is_decoded(tmp_path):
    F = fx._tfds().features
    spec = features({"clip_function_input/base_pose_tool_reached": F.Tensor(shape=(), dtype=np.object_),
                     "gripper_closed": F.Tensor(shape=(1,), dtype=np.float32),
                     "natural_language_instruction": F.Text()},
                    F.FeaturesDict({"world_vector": F.Tensor(shape=(3,), dtype=np.float32),
                                    "rotation_delta": F.Tensor(shape=(3,), dtype=np.float32),
                                    "gripper_closedness_action": F.Tensor(shape=(1,), dtype=np.float32)}))
    poses = [np.arange(7, dtype=np.float32) * (step + 1) for step in range(2)]
    observations = [{"clip_function_input/base_pose_tool_reached": zlib.compress(p.tobytes()),
                     "gripper_closed": [0.0], "natural_language_instruction": "pick"} for p in poses]
    actions = [{"world_vector": [0, 0, 0], "rotation_delta": [0, 0, 0], "gripper_closedness_action": [0.0]}] * 2
    np.testing.assert_array_equal(read(tmp_path, "kuka", spec, observations, actions).state[:, :7], np.stack(poses))


def test_bc_z_reads_present_and_future_keys_and_inverts_target_close(tmp_path):
    F = fx._tfds().features
    spec = features({"present/xyz": F.Tensor(shape=(3,), dtype=np.float32),
                     "present/axis_angle": F.Tensor(shape=(3,), dtype=np.float32),
                     "present/sensed_close": F.Tensor(shape=(1,), dtype=np.float32),
                     "natural_language_instruction": F.Text()},
                    F.FeaturesDict({"future/xyz_residual": F.Tensor(shape=(30,), dtype=np.float32),
                                    "future/axis_angle_residual": F.Tensor(shape=(30,), dtype=np.float32),
                                    "future/target_close": F.Tensor(shape=(10,), dtype=np.int64)}))
    observations = [{"present/xyz": [1, 2, 3], "present/axis_angle": [0, 0, 1], "present/sensed_close": [c],
                     "natural_language_instruction": "place the bowl"} for c in (0.0, 1.0)]
    actions = [{"future/xyz_residual": np.arange(30, dtype=np.float32), "future/axis_angle_residual": np.ones(30, np.float32),
                "future/target_close": np.full(10, c)} for c in (0, 1)]
    result = read(tmp_path, "bc_z", spec, observations, actions)
    np.testing.assert_array_equal(result.actions, [[0, 1, 2, 1, 1, 1, 1], [0, 1, 2, 1, 1, 1, 0]])
    np.testing.assert_array_equal(result.state[:, 6], [1, 0])


def _flat(name: str, action_dims: int, state_dims: int):
    """A flat layout (observation/state, action vectors) with the entry's own camera keys."""
    F = fx._tfds().features
    return features({"state": F.Tensor(shape=(state_dims,), dtype=np.float32)},
                    F.Tensor(shape=(action_dims,), dtype=np.float32), tuple(lookup(name).cameras.values()))


def test_cmu_stretch_gripper_is_dimension_6_not_the_terminate_flag(tmp_path):
    actions = [np.array([0.1, 0.2, 0.3, 0, 0, 0, gripper, terminate], np.float32)
               for gripper, terminate in ((1.0, 0.0), (0.0, 0.0), (0.0, 1.0))]
    result = read(tmp_path, "cmu_stretch", _flat("cmu_stretch", 8, 4), [{"state": np.zeros(4, np.float32)}] * 3, actions)
    np.testing.assert_array_equal(result.actions[:, -1], [1, 0, 0])  # Octo / OpenVLA: action[..., :-1]
    assert result.actions.shape == (3, 7)


def test_stanford_hydra_gripper_action_is_inverted(tmp_path):
    actions = [np.array([0] * 6 + [closed], np.float32) for closed in (0.0, 1.0, 1.0)]  # 1 = close
    name = "stanford_hydra_dataset_converted_externally_to_rlds"
    result = read(tmp_path, name, _flat(name, 7, 27),
                  [{"state": np.zeros(27, np.float32)}] * 3, actions)
    np.testing.assert_array_equal(result.actions[:, 6], [1, 0, 0])


def test_nyu_franka_play_gripper_is_clipped_with_plus_one_open(tmp_path):
    actions = [np.concatenate([np.zeros(7), np.arange(6) * 0.1, [g], [0.0]]).astype(np.float32)
               for g in (1.0, -1.0, 0.5)]
    name = "nyu_franka_play_dataset_converted_externally_to_rlds"
    result = read(tmp_path, name, _flat(name, 15, 13),
                  [{"state": np.zeros(13, np.float32)}] * 3, actions)
    np.testing.assert_allclose(result.actions[:, 6], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(result.actions[0, :6], np.arange(6) * 0.1, atol=1e-7)


def test_berkeley_fanuc_gripper_comes_from_the_inverted_gripper_state(tmp_path):
    states = [np.concatenate([np.zeros(6), [closed], np.zeros(6)]).astype(np.float32) for closed in (0.0, 1.0)]
    result = read(tmp_path, "berkeley_fanuc_manipulation", _flat("berkeley_fanuc_manipulation", 6, 13),
                  [{"state": s} for s in states],
                  [np.full(6, 0.5, np.float32)] * 2)
    np.testing.assert_array_equal(result.actions, [[0.5] * 6 + [1.0], [0.5] * 6 + [0.0]])


def test_the_magic_soup_recipes_are_octos_and_openvlas_mixtures():
    from kidata.pipelines.recipe import load_recipe

    octo = {s.options["dataset"]: s.weight for s in load_recipe("oxe_magic_soup").sources}
    assert len(octo) == 25 and octo["nyu_door_opening_surprising_effectiveness"] == 1.0 and octo["bc_z"] == 0.2
    assert octo["bridge_dataset"] == 1.0 and "bridge" not in octo and "droid" not in octo
    plus = {s.options["dataset"]: s.weight for s in load_recipe("oxe_magic_soup_plus").sources}
    assert len(plus) == 27 and plus["droid"] == 0.06 and plus["dobbe"] == 0.2 and plus["fmb_dataset"] == 1.0
    assert "nyu_door_opening_surprising_effectiveness" not in plus
    for name in set(octo) | set(plus):
        assert lookup(name).name == name


def test_stats_shows_each_gripper_conventions_values_before_and_after(tmp_path, capsys):
    from kidata.cli import main

    name = "fractal20220817_data"
    directory = fx.write_dataset(tmp_path, name, fx.fractal_features(), {"train": [fx.fractal_episode(0)]})
    report = RldsSource(str(directory), lookup(name)).conversion_report()
    assert report["action/gripper_closedness_action|relative_close_to_open"] == ([-1.0, 0.0, 1.0], [0.0, 1.0])
    assert report["observation/gripper_closed|close_to_open"] == ([0.0, 1.0], [0.0, 1.0])
    assert main(["stats", "--reader", "rlds", "--path", str(directory), "--dataset", name, "--quiet"]) == 0
    assert ("action/gripper_closedness_action|relative_close_to_open: values {-1, 0, 1} -> {0, 1} (1 = open)"
            in capsys.readouterr().out)
