"""DROID (RLDS ``droid`` / ``droid_100``): three cameras, joint state, selectable action space.

Written from DROID's RLDS feature spec: observation/{exterior_image_1_left, exterior_image_2_left,
wrist_image_left, joint_position (7), gripper_position (1), cartesian_position (6)},
action_dict/{joint_velocity, joint_position, cartesian_velocity, cartesian_position (6 or 7),
gripper_position, gripper_velocity}, language_instruction{,_2,_3}, episode_metadata/file_path.
DROID's gripper_position is 1 = closed; standardized to 1 = open. Control runs at 15 Hz.
"""

from __future__ import annotations

from kidata.sources.registry import register_dataset
from kidata.sources.spec import DatasetSpec, make_spec

ACTION_SPACES = {
    "joint_velocity": "action_dict/joint_velocity",
    "joint_position": "action_dict/joint_position",
    "cartesian_velocity": "action_dict/cartesian_velocity",
}


def droid_spec(action_space: str = "joint_velocity", *, name: str = "droid", success_only: bool = True) -> DatasetSpec:
    """The DROID entry with the chosen action space (each + absolute gripper, 1 = open).

    ``success_only`` keeps episodes whose episode_metadata/file_path contains "success" (DROID
    stores failed episodes under a "failure" folder).
    """
    if action_space not in ACTION_SPACES:
        raise ValueError(f"DROID action space {action_space!r}: choose one of {sorted(ACTION_SPACES)}")
    return make_spec(
        name,
        cameras={"base_0": "exterior_image_1_left", "base_1": "exterior_image_2_left",
                 "left_wrist_0": "wrist_image_left"},
        state=["observation/joint_position", "observation/gripper_position|close_to_open"],
        action=[ACTION_SPACES[action_space], "action_dict/gripper_position|close_to_open"],
        fps=15,
        action_space=action_space,
        language=("language_instruction", "language_instruction_2", "language_instruction_3"),
        episode_filter="success_in_path" if success_only else None,
    )


register_dataset(droid_spec(name="droid"))
register_dataset(droid_spec(name="droid_100"))
