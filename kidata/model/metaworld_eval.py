"""``kidata eval metaworld``: closed-loop success rates of a policy in Meta-World.

A policy is any object with ``sample_actions(observation) -> float [H, 4]`` over raw observations
({"images": {camera: uint8 [S, S, 3]}, "state": float [4], "prompt": str}, plus "env_obs", the
simulator's 39-d observation, for privileged baselines) returning actions in kidata's convention
(gripper 1 = open). Each task runs ``episodes`` seeded variations (seeds apart from the training
rollouts'); the first ``replan`` actions of every chunk are executed before asking again. Two
reference policies bound the evaluator: the scripted expert (~100%) and uniform random actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kidata.sources.metaworld import DEFAULT_CAMERAS, Scene, expert, from_env_action, instruction, resolve_tasks, to_env_action

EVAL_SEED = 10_000  # variations and resets apart from the default training seeds


class ExpertPolicy:
    """The benchmark's scripted policy for the task (reads the privileged ``env_obs``)."""

    needs_images = False

    def __init__(self) -> None:
        self._policies: dict[str, Any] = {}

    def sample_actions(self, observation: Mapping[str, Any]) -> np.ndarray:
        task = observation["task"]
        if task not in self._policies:
            self._policies[task] = expert(task)
        return from_env_action(np.clip(self._policies[task].get_action(observation["env_obs"]), -1, 1))[None]


class RandomPolicy:
    """Uniform random actions over the action space (the lower bound)."""

    needs_images = False

    def __init__(self, seed: int = 0, horizon: int = 10) -> None:
        self.rng, self.horizon = np.random.default_rng(seed), horizon

    def sample_actions(self, observation: Mapping[str, Any]) -> np.ndarray:
        return from_env_action(self.rng.uniform(-1, 1, size=(self.horizon, 4)))


def evaluate_metaworld(policy: Any, tasks: str | Sequence[str], *, episodes: int = 5, replan: int = 5,
                       max_steps: int = 300, seed: int = EVAL_SEED, cameras: Mapping[str, str] | None = None,
                       image_size: int = 96, out: str | Path | None = None, sheets: int = 1) -> dict:
    """Success rate per task and their mean; with ``out``, contact sheets of the first ``sheets``
    episodes of each task and ``metaworld_eval.json``."""
    cameras = dict(cameras or DEFAULT_CAMERAS)
    needs_images = getattr(policy, "needs_images", True)
    per_task, lengths = {}, {}
    for task in resolve_tasks(tasks):
        scene = Scene(task, seed=seed, image_size=image_size)
        successes, steps_used = 0, []
        try:
            for episode in range(episodes):
                frames: list[np.ndarray] = []
                keep = out is not None and episode < sheets
                success, steps = _episode(policy, scene, task, episode, cameras, replan, max_steps, needs_images, keep, frames)
                successes += success
                steps_used.append(steps)
                if keep and frames:
                    _contact_sheet(frames, Path(out) / f"{task}-episode{episode}.png", success)
        finally:
            scene.close()
        per_task[task] = successes / episodes
        lengths[task] = float(np.mean(steps_used))
    result = {"success_rate": per_task, "mean_success_rate": float(np.mean(list(per_task.values()))),
              "episodes_per_task": episodes, "replan": replan, "max_steps": max_steps, "mean_steps": lengths}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metaworld_eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _episode(policy, scene: Scene, task: str, episode: int, cameras, replan: int, max_steps: int, needs_images: bool,
             keep: bool, frames: list) -> tuple[bool, int]:
    observation = scene.reset(episode)
    queue: list[np.ndarray] = []
    for step in range(max_steps):
        if not queue:
            images = {camera: scene.render(name) for camera, name in cameras.items()} if needs_images or keep else {}
            if keep and images:
                frames.append(images[next(iter(cameras))])
            chunk = policy.sample_actions({"images": images, "state": observation[:4], "prompt": instruction(task),
                                           "env_obs": observation, "task": task})
            queue = list(np.asarray(chunk)[:replan])
        observation, success = scene.step(to_env_action(queue.pop(0)))
        if success:
            return True, step + 1
    return False, max_steps


def _contact_sheet(frames: list[np.ndarray], path: Path, success: bool, columns: int = 8) -> None:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    picked = frames[:: max(1, len(frames) // (columns * 2))][: columns * 2]
    size = picked[0].shape[0]
    rows = -(-len(picked) // columns)
    sheet = Image.new("RGB", (columns * size, rows * size + 14), "white")
    for index, frame in enumerate(picked):
        sheet.paste(Image.fromarray(frame), ((index % columns) * size, 14 + (index // columns) * size))
    ImageDraw.Draw(sheet).text((2, 1), f"{path.stem}: {'success' if success else 'failure'}", fill="black")
    sheet.save(path)
