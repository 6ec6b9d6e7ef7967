"""``make demo``: the main job on the embedded default, with no download.

1. Writes a small generated robot dataset in LIBERO's HDF5 demo layout (a top-down tabletop drawn
   with numpy: a gripper marker carries a coloured block to a bowl along minimum-jerk paths; two
   cameras; 7-d end-effector delta actions with a gripper), and a small VQAv2-format question set
   about the same scenes. (Meta-World will replace the generated robot data as the default.)
2. Builds ``pipelines/demo.toml`` from them: statistics, a FAST tokenizer fitted on the data,
   samples, webdataset shards, manifest and report.
3. Prints a few decoded samples and where everything is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kidata.sources.synthetic import minimum_jerk_episodes

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "demo.toml"
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 200, 40)}
IMAGE = 96


def _draw(block_xy, bowl_xy, gripper_xy, color, *, closed: bool, wrist: bool) -> np.ndarray:
    """A top-down (or gripper-centred, for the wrist view) tabletop frame, uint8 [96, 96, 3]."""
    frame = np.full((IMAGE, IMAGE, 3), (205, 180, 140), dtype=np.uint8)  # wooden table
    yy, xx = np.mgrid[0:IMAGE, 0:IMAGE]
    shift = (np.asarray(gripper_xy) - 0.5) if wrist else np.zeros(2)
    zoom = 2.0 if wrist else 1.0

    def to_pixels(point):
        return ((np.asarray(point) - shift - 0.5) * zoom + 0.5) * IMAGE

    bowl = to_pixels(bowl_xy)
    ring = np.hypot(xx - bowl[0], yy - bowl[1])
    frame[(ring < 11 * zoom) & (ring > 7 * zoom)] = (240, 240, 240)
    block = to_pixels(block_xy)
    frame[(abs(xx - block[0]) < 4 * zoom) & (abs(yy - block[1]) < 4 * zoom)] = COLORS[color]
    gripper = to_pixels(gripper_xy)
    width = 3 if closed else 6
    for side in (-1, 1):
        frame[(abs(xx - gripper[0] - side * width * zoom) < 1.5 * zoom) & (abs(yy - gripper[1]) < 5 * zoom)] = (30, 30, 30)
    return frame


def write_robot_demos(directory: Path, *, demos_per_task: int = 6, steps: int = 48, seed: int = 0) -> list[Path]:
    """One HDF5 file per task (robomimic layout, as LIBERO ships), frames stored upside down."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for color in COLORS:
        path = directory / f"TABLETOP_SCENE1_put_the_{color}_block_in_the_bowl_demo.hdf5"
        with h5py.File(path, "w") as handle:
            data = handle.create_group("data")
            data.attrs["problem_info"] = json.dumps({"language_instruction": f"put the {color} block in the bowl"})
            for number in range(demos_per_task):
                block, bowl, start = rng.uniform(0.2, 0.8, (3, 2))
                wiggle = minimum_jerk_episodes(1, steps, 4, seed=int(rng.integers(1 << 30)), noise=0.002)[0, :, :4] * 0.02
                half = steps // 2
                phase = np.linspace(0, 1, half)[:, None]
                blend = 10 * phase**3 - 15 * phase**4 + 6 * phase**5
                path_xy = np.concatenate([start + (block - start) * blend, block + (bowl - block) * blend])
                path_xy[:, :2] += wiggle[:, :2]
                closed = np.arange(steps) >= half
                held = np.where(closed[:, None], path_xy, block)
                frames = [_draw(held[t], bowl, path_xy[t], color, closed=closed[t], wrist=False) for t in range(steps)]
                wrist = [_draw(held[t], bowl, path_xy[t], color, closed=closed[t], wrist=True) for t in range(steps)]
                ee_pos = np.concatenate([path_xy, np.full((steps, 1), 0.1)], axis=1)
                ee_ori = np.zeros((steps, 3)) + wiggle[:, 2:3]
                actions = np.zeros((steps, 7))
                actions[:-1, :3] = np.diff(ee_pos, axis=0) * 10
                actions[-1, :3] = actions[-2, :3]
                actions[:, 3:6] = wiggle[:, 1:4] * 5
                actions[:, 6] = np.where(closed, 1.0, -1.0)  # LIBERO: -1 open, +1 close
                gripper = np.where(closed[:, None], [[0.01, -0.01]], [[0.04, -0.04]])
                group = data.create_group(f"demo_{number}")
                obs = group.create_group("obs")
                obs["agentview_rgb"] = np.stack(frames)[:, ::-1, ::-1]  # stored upside down, as LIBERO does
                obs["eye_in_hand_rgb"] = np.stack(wrist)[:, ::-1, ::-1]
                obs["ee_pos"], obs["ee_ori"], obs["gripper_states"] = ee_pos, ee_ori, gripper
                obs["joint_states"] = np.zeros((steps, 7))
                group["actions"] = actions
        files.append(path)
    return files


def write_vqa_set(directory: Path, *, count: int = 24, seed: int = 1) -> None:
    """VQAv2-format questions/annotations about generated tabletop scenes, images as JPEG."""
    from kidata.pipelines.shards import jpeg_bytes

    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    questions, annotations = [], []
    for image_id in range(count):
        color = list(COLORS)[image_id % len(COLORS)]
        block, bowl, gripper = rng.uniform(0.2, 0.8, (3, 2))
        frame = _draw(block, bowl, gripper, color, closed=False, wrist=False)
        (images / f"COCO_demo_{image_id:012d}.jpg").write_bytes(jpeg_bytes(frame, 95))
        side = "left" if block[0] < bowl[0] else "right"
        for offset, (question, answer) in enumerate([("What color is the block?", color),
                                                     (f"Is the block to the left or right of the bowl?", side)]):
            question_id = image_id * 10 + offset
            questions.append({"image_id": image_id, "question": question, "question_id": question_id})
            annotations.append({"question_id": question_id, "image_id": image_id, "multiple_choice_answer": answer,
                                "answers": [{"answer": answer, "answer_id": i + 1} for i in range(10)]})
    (directory / "questions.json").write_text(json.dumps({"data_subtype": "demo", "questions": questions}))
    (directory / "annotations.json").write_text(json.dumps({"data_subtype": "demo", "annotations": annotations}))


def run_demo(out: Path, *, workers: int = 2) -> dict:
    from kidata.pipelines.build import build
    from kidata.pipelines.inspect_build import inspect_build
    from kidata.pipelines.recipe import load_recipe

    data = DEMO_RECIPE.parent.parent / "demo-data"
    if not (data / "vqa" / "annotations.json").exists():
        print(f"writing generated demo data to {data} ...", flush=True)
        write_robot_demos(data / "robot")
        write_vqa_set(data / "vqa")
    recipe = load_recipe(DEMO_RECIPE)
    manifest = build(recipe, str(out), workers=workers, progress=True)
    print(inspect_build(str(out), samples=1, save=str(out / "inspect")))
    for source in manifest["sources"]:
        print(f"{source['name']}: {source['samples']} samples in {len(source['shards'])} shards")
    print(f"\noutput: {out}/manifest.json, shards under {out}/<source>/, report {out}/build_report.json,"
          f" FAST tokenizer and its report in {out}/fast_tokenizer/, pictures in {out}/inspect/")
    return manifest
