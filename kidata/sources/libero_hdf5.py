"""LIBERO's original HDF5 demonstrations (robomimic layout), standardized to the conventions of its
RLDS release (``kidata.sources.datasets.libero``): data/demo_N/obs/{agentview_rgb, eye_in_hand_rgb,
ee_pos, ee_ori, gripper_states, joint_states}, data/demo_N/actions; the instruction from the
``problem_info`` attribute or the file name. Frames are stored upside down and no-op steps are
kept, so this reader rotates the frames by 180 degrees and drops no-op steps the way the RLDS form
was made (``kidata.sources.spec.noop_mask``). Both forms give episodes with the same camera names
and orientation, state layout, gripper sign (1 = open) and steps, at 20 Hz.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from kidata.schema import Episode, Frames, episode_defect
from kidata.sources.base import ReadReport, WorkUnit, load_annotations, split_range
from kidata.sources.registry import register_reader
from kidata.sources.spec import noop_mask

FPS = 20


def instruction_from_filename(path: str | Path) -> str:
    """'KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5' -> 'turn on the stove'."""
    stem = Path(path).stem
    stem = re.sub(r"_demo$", "", stem)
    words = stem.split("_")
    while words and (words[0].isupper() or re.fullmatch(r"SCENE\d+", words[0])):
        words.pop(0)
    return " ".join(words)


class LiberoHdf5Source:
    """Standard episodes from LIBERO HDF5 demo files (one file = one task)."""

    kind = "robot"

    def __init__(self, files: list[str] | str, *, name: str = "libero", annotations: str | None = None,
                 min_steps: int = 2) -> None:
        paths = [files] if isinstance(files, (str, Path)) else list(files)
        expanded: list[Path] = []
        for path in map(Path, paths):
            expanded.extend(sorted(path.glob("*.hdf5")) if path.is_dir() else [path])
        if not expanded:
            raise FileNotFoundError(f"no LIBERO .hdf5 files in {paths}")
        self.files = [str(p) for p in expanded]
        self.name = name
        self.min_steps = min_steps
        self._annotations = load_annotations(annotations)

    def _demos(self, file: str) -> list[str]:
        import h5py

        with h5py.File(file, "r") as handle:
            if "data" not in handle:
                raise KeyError(f"{file}: no 'data' group (keys: {sorted(handle.keys())})")
            names = list(handle["data"].keys())
        return sorted((n for n in names if n.startswith("demo_")), key=lambda n: int(n.split("_")[1]))

    def list_units(self, count: int) -> list[WorkUnit]:
        """Demo ranges per file, about ``count`` units in total."""
        per_file = max(1, -(-count // len(self.files)))
        units = []
        for file in self.files:
            demos = len(self._demos(file))
            units.extend(WorkUnit(self.name, file, a, b) for a, b in split_range(demos, per_file))
        return units

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        import h5py

        report = report if report is not None else ReadReport()
        demos = self._demos(unit.part)[unit.start : unit.stop]
        with h5py.File(unit.part, "r") as handle:
            instruction = self._instruction(handle, unit.part)
            for demo in demos:
                group = handle["data"][demo]
                episode = self._episode(unit.part, demo, group, instruction, images, report)
                if episode is not None:
                    yield episode

    def episodes(self, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        for unit in self.list_units(1):
            yield from self.read(unit, images=images, report=report)

    @staticmethod
    def _instruction(handle, file: str) -> str:
        info = handle["data"].attrs.get("problem_info")
        if info is not None:
            if isinstance(info, bytes):
                info = info.decode("utf-8", "replace")
            text = json.loads(info).get("language_instruction")
            if text:
                return " ".join(str(text).split())
        return instruction_from_filename(file)

    def _episode(self, file, demo, group, instruction, images, report) -> Episode | None:
        obs = group["obs"]
        for key in ("ee_pos", "ee_ori", "gripper_states"):
            if key not in obs:
                raise KeyError(f"{file} {demo}: obs lacks {key!r} (has {sorted(obs.keys())})")
        raw_actions = np.asarray(group["actions"], dtype=np.float32)
        state = np.concatenate(
            [np.asarray(obs["ee_pos"]), np.asarray(obs["ee_ori"]), np.asarray(obs["gripper_states"])], axis=1
        ).astype(np.float32)
        keep = ~noop_mask(raw_actions)
        report.notices["noop_steps_removed"] += int((~keep).sum())
        actions = raw_actions[keep].copy()
        actions[:, 6] = (1.0 - actions[:, 6]) / 2.0  # -1 open / +1 close -> 1 = open
        state = state[keep]
        defect = episode_defect(state, actions, min_steps=self.min_steps)
        if defect is not None:
            report.quarantined.add(defect)
            return None
        frames = {}
        if images:
            for camera, key in (("base_0", "agentview_rgb"), ("left_wrist_0", "eye_in_hand_rgb")):
                if key in obs:
                    frames[camera] = Frames(np.asarray(obs[key])[keep], rotate_180=True)
        episode_id = f"{Path(file).stem}-{demo}"
        return Episode(
            episode_id=episode_id,
            source=self.name,
            state=state,
            actions=actions,
            instructions=(instruction,),
            fps=float(FPS),
            images=frames,
            metadata={"path": file, "demo": demo},
            annotations=self._annotations.get(episode_id, ()),
        )


@register_reader("libero_hdf5", kind="robot", options=("path", "language_annotations"),
                 paths=("path", "language_annotations"))
def open_libero_hdf5(options, *, name: str | None, image_size: int, seed: int = 0) -> LiberoHdf5Source:
    """LIBERO demo files or folders (``path``: one or a list)."""
    return LiberoHdf5Source(options["path"], name=name or "libero", annotations=options.get("language_annotations"))
