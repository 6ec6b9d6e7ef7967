"""Tiny RLDS datasets written with tfds in the feature layouts of real robot datasets.

Layouts follow the datasets' published TFDS feature specs (DROID, LIBERO no_noops, fractal/RT-1);
the OXE bridge copy is built from the real features.json in ../shared. Values are chosen so tests
can state exact expectations (e.g. gripper conventions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def write_dataset(root: Path, name: str, features: Any, episodes: dict[str, list[dict]]) -> Path:
    """Stores episodes per split with tfds and returns the <name>/<version> directory."""
    from kidata.pipelines.export import tfds_scratch

    tfds = _tfds()
    with tfds_scratch():  # TFDS would leave a scratch folder in /tmp per dataset written
        builder = tfds.dataset_builders.store_as_tfds_dataset(
            name=name,
            version="1.0.0",
            features=features,
            split_datasets={split: list(enumerate(items)) for split, items in episodes.items()},
            data_dir=str(root),
            disable_shuffling=True,
        )
    return Path(builder.data_dir)


def _image(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def _common_steps(F) -> dict:
    return {
        "discount": F.Scalar(dtype=np.float32),
        "reward": F.Scalar(dtype=np.float32),
        "is_first": F.Scalar(dtype=np.bool_),
        "is_last": F.Scalar(dtype=np.bool_),
        "is_terminal": F.Scalar(dtype=np.bool_),
    }


def _flags(step: int, steps: int) -> dict:
    return {"discount": 1.0, "reward": float(step == steps - 1), "is_first": step == 0,
            "is_last": step == steps - 1, "is_terminal": step == steps - 1}


# ------------------------------------------------------------------------------------- DROID
DROID_IMAGE = (180, 320, 3)


def droid_features():
    F = _tfds().features
    image = lambda: F.Image(shape=DROID_IMAGE, dtype=np.uint8, encoding_format="jpeg")  # noqa: E731
    return F.FeaturesDict({
        "steps": F.Dataset({
            "observation": F.FeaturesDict({
                "exterior_image_1_left": image(),
                "exterior_image_2_left": image(),
                "wrist_image_left": image(),
                "cartesian_position": F.Tensor(shape=(6,), dtype=np.float64),
                "gripper_position": F.Tensor(shape=(1,), dtype=np.float64),
                "joint_position": F.Tensor(shape=(7,), dtype=np.float64),
            }),
            "action_dict": F.FeaturesDict({
                "cartesian_position": F.Tensor(shape=(6,), dtype=np.float64),
                "cartesian_velocity": F.Tensor(shape=(6,), dtype=np.float64),
                "gripper_position": F.Tensor(shape=(1,), dtype=np.float64),
                "gripper_velocity": F.Tensor(shape=(1,), dtype=np.float64),
                "joint_position": F.Tensor(shape=(7,), dtype=np.float64),
                "joint_velocity": F.Tensor(shape=(7,), dtype=np.float64),
            }),
            "action": F.Tensor(shape=(7,), dtype=np.float64),
            "language_instruction": F.Text(),
            "language_instruction_2": F.Text(),
            "language_instruction_3": F.Text(),
            **_common_steps(F),
        }),
        "episode_metadata": F.FeaturesDict({"file_path": F.Text(), "recording_folderpath": F.Text()}),
    })


def droid_episode(index: int, steps: int, *, success: bool = True) -> dict:
    gripper = np.linspace(0.0, 1.0, steps)  # DROID: 0 = open, 1 = closed
    items = []
    for step in range(steps):
        joint = np.full(7, index + step / 10.0)
        items.append({
            "observation": {
                "exterior_image_1_left": _image(index * 100 + step, DROID_IMAGE),
                "exterior_image_2_left": _image(index * 100 + step + 1, DROID_IMAGE),
                "wrist_image_left": _image(index * 100 + step + 2, DROID_IMAGE),
                "cartesian_position": np.full(6, 0.5),
                "gripper_position": [gripper[step]],
                "joint_position": joint,
            },
            "action_dict": {
                "cartesian_position": np.full(6, 0.25),
                "cartesian_velocity": np.full(6, 0.1 * step),
                "gripper_position": [gripper[step]],
                "gripper_velocity": [0.0],
                "joint_position": joint + 0.01,
                "joint_velocity": np.full(7, -0.2 * step),
            },
            "action": np.concatenate([np.full(6, 0.1 * step), [gripper[step]]]),
            "language_instruction": f"put the marker in the cup {index}",
            "language_instruction_2": "place marker into cup",
            "language_instruction_3": "",
            **_flags(step, steps),
        })
    folder = "success" if success else "failure"
    return {"steps": items, "episode_metadata": {
        "file_path": f"gs://droid/lab/{folder}/2023-07-0{index}/trajectory.h5",
        "recording_folderpath": f"gs://droid/lab/{folder}/2023-07-0{index}/recordings/MP4"}}


# ------------------------------------------------------------------------------------- LIBERO
LIBERO_IMAGE = (256, 256, 3)


def libero_features():
    F = _tfds().features
    return F.FeaturesDict({
        "steps": F.Dataset({
            "observation": F.FeaturesDict({
                "image": F.Image(shape=LIBERO_IMAGE, dtype=np.uint8, encoding_format="png"),
                "wrist_image": F.Image(shape=LIBERO_IMAGE, dtype=np.uint8, encoding_format="png"),
                "state": F.Tensor(shape=(8,), dtype=np.float32),
                "joint_state": F.Tensor(shape=(7,), dtype=np.float32),
            }),
            "action": F.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": F.Text(),
            **_common_steps(F),
        }),
        "episode_metadata": F.FeaturesDict({"file_path": F.Text()}),
    })


def libero_rlds_episode(demo: dict, instruction: str, file_path: str) -> dict:
    """The RLDS form of a raw LIBERO demo: frames rotated 180 degrees, no-op steps removed.

    ``demo`` holds raw arrays: agentview [T,H,W,3], wrist [T,H,W,3], ee_pos, ee_ori, gripper,
    joints, actions, and ``keep`` (bool [T], False on no-op steps)."""
    items = []
    kept = np.flatnonzero(demo["keep"])
    for position, step in enumerate(kept):
        items.append({
            "observation": {
                "image": demo["agentview"][step][::-1, ::-1],
                "wrist_image": demo["wrist"][step][::-1, ::-1],
                "state": np.concatenate([demo["ee_pos"][step], demo["ee_ori"][step], demo["gripper"][step]]).astype(np.float32),
                "joint_state": demo["joints"][step].astype(np.float32),
            },
            "action": demo["actions"][step].astype(np.float32),
            "language_instruction": instruction,
            **_flags(position, len(kept)),
        })
    return {"steps": items, "episode_metadata": {"file_path": file_path}}


def raw_libero_demo(seed: int, steps: int, image_shape=LIBERO_IMAGE) -> dict:
    """A raw LIBERO demo with two no-op steps (tiny arm motion, unchanged gripper)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    actions[:, 6] = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)  # open, then close
    actions[2, :6] = 0.0  # no-op: still arm, same gripper as step 1
    actions[7, :6] = 1e-6
    keep = np.ones(steps, dtype=bool)
    keep[[2, 7]] = False
    return {
        "agentview": rng.integers(0, 255, (steps, *image_shape), dtype=np.uint8),
        "wrist": rng.integers(0, 255, (steps, *image_shape), dtype=np.uint8),
        "ee_pos": rng.normal(size=(steps, 3)).astype(np.float64),
        "ee_ori": rng.normal(size=(steps, 3)).astype(np.float64),
        "gripper": rng.uniform(0, 0.04, (steps, 2)).astype(np.float64),
        "joints": rng.normal(size=(steps, 7)).astype(np.float64),
        "actions": actions,
        "keep": keep,
    }


def write_libero_hdf5(path: Path, demos: list[dict], *, problem_info: dict | None = None) -> Path:
    """A LIBERO demo file in the robomimic layout."""
    import h5py

    with h5py.File(path, "w") as handle:
        data = handle.create_group("data")
        if problem_info is not None:
            data.attrs["problem_info"] = json.dumps(problem_info)
        for number, demo in enumerate(demos):
            group = data.create_group(f"demo_{number}")
            obs = group.create_group("obs")
            obs["agentview_rgb"] = demo["agentview"]
            obs["eye_in_hand_rgb"] = demo["wrist"]
            obs["ee_pos"] = demo["ee_pos"]
            obs["ee_ori"] = demo["ee_ori"]
            obs["gripper_states"] = demo["gripper"]
            obs["joint_states"] = demo["joints"]
            group["actions"] = demo["actions"].astype(np.float64)
            group.attrs["num_samples"] = len(demo["actions"])
    return path


# ------------------------------------------------------------------------------------- fractal
FRACTAL_IMAGE = (256, 320, 3)


def fractal_features():
    F = _tfds().features
    return F.FeaturesDict({
        "steps": F.Dataset({
            "observation": F.FeaturesDict({
                "image": F.Image(shape=FRACTAL_IMAGE, dtype=np.uint8, encoding_format="jpeg"),
                "natural_language_instruction": F.Text(),
                "natural_language_embedding": F.Tensor(shape=(512,), dtype=np.float32),
                "base_pose_tool_reached": F.Tensor(shape=(7,), dtype=np.float32),
                "gripper_closed": F.Tensor(shape=(1,), dtype=np.float32),
                "gripper_closedness_commanded": F.Tensor(shape=(1,), dtype=np.float32),
                "height_to_bottom": F.Tensor(shape=(1,), dtype=np.float32),
            }),
            "action": F.FeaturesDict({
                "world_vector": F.Tensor(shape=(3,), dtype=np.float32),
                "rotation_delta": F.Tensor(shape=(3,), dtype=np.float32),
                "gripper_closedness_action": F.Tensor(shape=(1,), dtype=np.float32),
                "terminate_episode": F.Tensor(shape=(3,), dtype=np.int32),
                "base_displacement_vector": F.Tensor(shape=(2,), dtype=np.float32),
                "base_displacement_vertical_rotation": F.Tensor(shape=(1,), dtype=np.float32),
            }),
            "is_first": F.Scalar(dtype=np.bool_),
            "is_last": F.Scalar(dtype=np.bool_),
            "is_terminal": F.Scalar(dtype=np.bool_),
            "reward": F.Scalar(dtype=np.float32),
        }),
    })


FRACTAL_GRIPPER_COMMANDS = [0.0, 1.0, 0.0, 0.0, -1.0, 0.0]  # RT-1: +1 close, -1 open, 0 keep


def fractal_episode(index: int, *, world_vector: Callable[[int], list] | None = None) -> dict:
    items = []
    steps = len(FRACTAL_GRIPPER_COMMANDS)
    for step, command in enumerate(FRACTAL_GRIPPER_COMMANDS):
        closed = 1.0 if 1 <= step < 4 else 0.0
        items.append({
            "observation": {
                "image": _image(index * 10 + step, FRACTAL_IMAGE),
                "natural_language_instruction": "pick coke can",
                "natural_language_embedding": np.zeros(512, np.float32),
                "base_pose_tool_reached": np.full(7, step, np.float32),
                "gripper_closed": [closed],
                "gripper_closedness_commanded": [command],
                "height_to_bottom": [0.3],
            },
            "action": {
                "world_vector": world_vector(step) if world_vector else [0.01 * step, 0.0, -0.01],
                "rotation_delta": [0.0, 0.1, 0.0],
                "gripper_closedness_action": [command],
                "terminate_episode": [0, 1, 0] if step < steps - 1 else [1, 0, 0],
                "base_displacement_vector": [0.0, 0.0],
                "base_displacement_vertical_rotation": [0.0],
            },
            "is_first": step == 0, "is_last": step == steps - 1, "is_terminal": step == steps - 1,
            "reward": float(step == steps - 1),
        })
    return {"steps": items}


# ------------------------------------------------------------------------------------- OXE copies
def features_from_json(path: Path):
    tfds = _tfds()
    return tfds.features.FeatureConnector.from_json(json.loads(path.read_text()))


def oxe_bridge_episode(index: int, steps: int = 4) -> dict:
    return {
        "episode_id": f"oxe-bridge-{index}",
        "steps": [{
            "observation": {
                "image": _image(index * 10 + step, (480, 640, 3)),
                "natural_language_embedding": np.zeros(512, np.float32),
                "state": np.full(7, step, np.float32),
                "natural_language_instruction": "open the drawer",
            },
            "action": {
                "world_vector": np.full(3, 0.1 * step, np.float32),
                "rotation_delta": np.zeros(3, np.float32),
                "open_gripper": step % 2 == 0,
                "terminate_episode": float(step == steps - 1),
            },
            "reward": 0.0, "is_first": step == 0, "is_last": step == steps - 1,
            "is_terminal": step == steps - 1,
        } for step in range(steps)],
    }


def language_table_episode(index: int, instruction: bytes, steps: int = 3) -> dict:
    codes = np.zeros(512, np.int32)
    codes[: len(instruction)] = list(instruction)
    return {
        "episode_id": f"lt-{index}",
        "steps": [{
            "observation": {
                "rgb": _image(index + step, (360, 640, 3)),
                "effector_translation": np.full(2, 0.1 * step, np.float32),
                "effector_target_translation": np.zeros(2, np.float32),
                "instruction": codes,
            },
            "action": np.full(2, 0.01, np.float32),
            "reward": 0.0, "is_first": step == 0, "is_last": step == steps - 1,
            "is_terminal": step == steps - 1,
        } for step in range(steps)],
    }
