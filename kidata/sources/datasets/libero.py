"""LIBERO's RLDS release (``libero_{spatial,object,goal,10}_no_noops``): observation/image and
wrist_image (256x256, already rotated 180 degrees), observation/state (8: end-effector position 3,
axis-angle 3, gripper joint positions 2), action (7, gripper -1 = open / +1 = close),
language_instruction. ``kidata.sources.libero_hdf5`` reads the original HDF5 demonstrations into
the same conventions."""

from __future__ import annotations

from kidata.sources.registry import register_dataset
from kidata.sources.spec import make_spec

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
FPS = 20

for _suite in SUITES:
    register_dataset(
        make_spec(
            f"{_suite}_no_noops",
            cameras={"base_0": "image", "left_wrist_0": "wrist_image"},
            state=["observation/state"],
            action=["action[:6]", "action[6:7]|pm1_close_to_open"],
            fps=FPS,
            action_space="eef_delta",
        )
    )
