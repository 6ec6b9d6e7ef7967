"""Standardization registry for Open X-Embodiment datasets and the Berkeley bridge_dataset layout.

Each entry is written from the dataset's published TFDS feature spec (the OXE datasets'
``features.json``; the tfds catalog pages show the same). Standard form:
cameras under standard names; state = the dataset's proprioception (end-effector pose and gripper
where it has them, else its raw state vector); action = end-effector delta (+ rotation delta where
present) + gripper openness with 1 = open. ``action_space`` says which kind each entry yields.

Entries whose exact layout the tests exercise with real-shaped data: bridge_dataset (real data),
bridge (OXE copy), fractal20220817_data. The others follow their feature specs but have not been
run on their real data here (no download is possible on this machine).
"""

from __future__ import annotations

from kidata.sources.registry import register_dataset
from kidata.sources.spec import make_spec

_RT1_LANGUAGE = ("observation/natural_language_instruction",)

_ENTRIES = [
    make_spec(
        "bridge_dataset",  # Berkeley BridgeData V2 as released in RLDS (image_0..3, 7-d state/action)
        cameras={"base_0": "image_0", "base_1": "image_1", "left_wrist_0": "image_3"},
        blank_cameras_absent=True,
        state=["observation/state"],
        action=["action[:6]", "action[6:7]"],
        fps=5,
        action_space="eef_delta",
        notes="image_2 (a third fixed view) has no standard slot and is not read. Views missing "
        "from an episode are stored as black frames; the has_image_k flags cannot be trusted (the "
        "published debug copy sets them all false while image_0..2 hold real frames), so a camera "
        "whose first frame is black is absent. The action's gripper is already 1 = open.",
    ),
    make_spec(
        "bridge",  # the OXE copy: nested action dict
        cameras={"base_0": "image"},
        state=["observation/state"],
        action=["action/world_vector", "action/rotation_delta", "action/open_gripper|bool_open"],
        fps=5,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "fractal20220817_data",  # RT-1
        cameras={"base_0": "image"},
        state=["observation/base_pose_tool_reached", "observation/gripper_closed|close_to_open"],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|relative_close_to_open"],
        fps=3,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "kuka",
        cameras={"base_0": "image"},
        state=["observation/clip_function_input/base_pose_tool_reached",
               "observation/gripper_closed|close_to_open"],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|relative_close_to_open"],
        fps=10,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "taco_play",
        cameras={"base_0": "rgb_static", "left_wrist_0": "rgb_gripper"},
        state=["observation/robot_obs[:7]"],  # tcp position 3, orientation 3, gripper width 1
        action=["action/rel_actions_world[:6]", "action/rel_actions_world[6:7]|pm1_open_to_open"],
        fps=15,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "jaco_play",
        cameras={"base_0": "image", "left_wrist_0": "image_wrist"},
        state=["observation/end_effector_cartesian_pos"],
        action=["action/world_vector", "action/gripper_closedness_action|relative_close_to_open"],
        fps=10,
        action_space="eef_position_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "berkeley_cable_routing",
        cameras={"base_0": "image", "base_1": "top_image", "left_wrist_0": "wrist45_image"},
        state=["observation/robot_state"],
        action=["action/world_vector", "action/rotation_delta"],
        fps=10,
        action_space="eef_delta_no_gripper",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "roboturk",
        cameras={"base_0": "front_rgb"},
        state=[],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|pm1_close_to_open"],
        fps=10,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
        notes="no proprioceptive state is published: state has 0 dimensions",
    ),
    make_spec(
        "nyu_door_opening_surprising_effectiveness",  # a wrist camera only; Octo's soup weighs it 1
        cameras={"left_wrist_0": "image"},
        state=[],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|relative_close_to_open"],
        fps=3,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
        notes="no proprioceptive state is published: state has 0 dimensions",
    ),
    make_spec(
        "viola",
        cameras={"base_0": "agentview_rgb", "left_wrist_0": "eye_in_hand_rgb"},
        state=["observation/joint_states", "observation/gripper_states"],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|pm1_close_to_open"],
        fps=20,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "berkeley_autolab_ur5",
        cameras={"base_0": "image", "left_wrist_0": "hand_image"},
        state=["observation/robot_state"],
        action=["action/world_vector", "action/rotation_delta",
                "action/gripper_closedness_action|relative_close_to_open"],
        fps=5,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "toto",
        cameras={"base_0": "image"},
        state=["observation/state"],
        action=["action/world_vector", "action/rotation_delta", "action/open_gripper|bool_open"],
        fps=30,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "language_table",
        cameras={"base_0": "rgb"},
        state=["observation/effector_translation"],
        action=["action"],
        fps=10,
        action_space="planar_position_delta",
        language=("observation/instruction",),
        language_format="utf8_ids",
    ),
    make_spec(
        "stanford_hydra_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|close_to_open"],  # the dataset's gripper action is 1 = close
        fps=10,
        action_space="eef_delta",
    ),
    make_spec(
        "austin_buds_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|pm1_close_to_open"],
        fps=20,
        action_space="eef_delta",
    ),
    make_spec(
        "nyu_franka_play_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "base_1": "image_additional_view"},
        state=["observation/state"],
        action=["action[7:13]", "action[13:14]|clip_open"],  # +1 = open, clipped (as Octo and OpenVLA)
        fps=3,
        action_space="eef_delta",
    ),
    make_spec(
        "furniture_bench_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:7]", "action[7:8]|pm1_close_to_open"],  # position 3 + quaternion 4
        fps=10,
        action_space="eef_delta_quaternion",
    ),
    make_spec(
        "ucsd_kitchen_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]"],
        fps=2,
        action_space="eef_absolute",
    ),
    make_spec(
        "austin_sailor_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|pm1_close_to_open"],
        fps=20,
        action_space="eef_delta",
    ),
    make_spec(
        "austin_sirius_dataset_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|pm1_close_to_open"],
        fps=20,
        action_space="eef_delta",
    ),
    make_spec(
        "dlr_edan_shared_control_converted_externally_to_rlds",
        cameras={"base_0": "image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|close_to_open"],
        fps=5,
        action_space="eef_delta",
    ),
    make_spec(
        "iamlab_cmu_pickup_insert_converted_externally_to_rlds",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:7]", "action[7:8]"],  # position 3 + quaternion 4, gripper 1 = open
        fps=20,
        action_space="eef_absolute_quaternion",
    ),
    make_spec(
        "utaustin_mutex",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]|pm1_close_to_open"],
        fps=20,
        action_space="eef_delta",
    ),
    make_spec(
        "berkeley_fanuc_manipulation",
        cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
        state=["observation/state"],
        # no gripper action is stored: the gripper state (1 = closed) stands in, as in Octo and OpenVLA
        action=["action", "observation/state[6:7]|close_to_open"],
        fps=10,
        action_space="eef_delta",
    ),
    make_spec(
        "cmu_stretch",
        cameras={"base_0": "image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]"],  # [3 position, 3 rotation, 1 gripper, 1 terminate]: not the flag
        fps=10,
        action_space="eef_delta",
    ),
    make_spec(
        "bc_z",
        cameras={"base_0": "image"},
        state=["observation/present/xyz", "observation/present/axis_angle",
               "observation/present/sensed_close|close_to_open"],
        action=["action/future/xyz_residual[:3]", "action/future/axis_angle_residual[:3]",
                "action/future/target_close[:1]|close_to_open"],
        fps=10,
        action_space="eef_delta",
        language=_RT1_LANGUAGE,
    ),
    make_spec(
        "fmb_dataset",
        cameras={"base_0": "image_side_1", "base_1": "image_side_2", "left_wrist_0": "image_wrist_1"},
        state=["observation/eef_pose", "observation/state_gripper_pose"],
        action=["action[:6]", "action[6:7]"],
        fps=10,
        action_space="eef_delta",
    ),
    make_spec(
        "dobbe",
        cameras={"left_wrist_0": "wrist_image"},
        state=["observation/state"],
        action=["action[:6]", "action[6:7]"],
        fps=30,
        action_space="eef_delta",
    ),
]

for _spec in _ENTRIES:
    register_dataset(_spec)
