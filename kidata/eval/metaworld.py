"""``kidata eval metaworld``: closed-loop success rates of a policy in Meta-World.

A policy is any object with ``sample_actions(observation) -> float [H, 4]`` over raw observations
({"images": {camera: uint8 [S, S, 3]}, "state": float [4], "prompt": str}, plus "env_obs", the
simulator's 39-d observation, and "task", for privileged baselines) returning actions in kidata's
convention (gripper 1 = open). Each task runs ``episodes`` seeded variations (seeds apart from the
training rollouts'); the first ``replan`` actions of every chunk are executed before asking again
(or, with ``ensemble``, ACT's temporal ensemble of every chunk covering the step: ``chunking``).
Two reference policies bound the evaluator: the scripted expert (~100%) and uniform random actions.

The scene a trained policy is evaluated in must be the one its data was rendered in (cameras,
render size, goal marker): ``SceneSettings.from_recipe`` reads them from the run's recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kidata.envs.metaworld import (
    DEFAULT_CAMERAS,
    MAX_EPISODE_STEPS,
    Scene,
    episode_id,
    expert,
    from_env_action,
    instruction,
    resolve_tasks,
    robot_state,
    to_env_action,
)
from kidata.eval.chunking import Chunking
from kidata.progress import bar as progress_bar
from kidata.progress import torch_threads
from kidata.recipe import Recipe

EVAL_SEED = 10_000  # variations and resets apart from the default training seeds


@dataclass(frozen=True)
class SceneSettings:
    """How the simulator is rendered: standard camera -> Meta-World camera, render size (pixels),
    goal marker scale (1 = Meta-World's own); and whether the policy's state carries the object and
    goal positions (``privileged_state``, the perception-bypass diagnostic)."""

    cameras: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CAMERAS))
    image_size: int = 96
    goal_marker_scale: float = 1.0
    privileged_state: bool = False

    @classmethod
    def from_recipe(cls, recipe: Recipe, source: str | None = None) -> "SceneSettings":
        """The settings of a run's ``metaworld`` source (the first one unless ``source`` names
        it), from its recipe (``Manifest.recipe``); a mixture without one is refused, naming its
        sources."""
        sources = recipe.sources_read_by("metaworld")
        chosen = next((s for s in sources if s.name == source), None) if source else (sources or [None])[0]
        if chosen is None:
            names = [s.name for s in recipe.sources]
            raise ValueError(f"this run's mixture has no Meta-World source{f' named {source!r}' if source else ''} "
                             f"(sources: {names}): evaluate a run trained on a metaworld recipe (kidata build demo)")
        options = chosen.options
        return cls(cameras=dict(options.get("cameras") or DEFAULT_CAMERAS),
                   image_size=int(options.get("image_size", recipe.mixture.image_size)),
                   goal_marker_scale=float(options.get("goal_marker_scale", 1.0)),
                   privileged_state=bool(options.get("privileged_state", False)))


def training_layouts(recipe: Recipe, tasks: str | Sequence[str], episodes: int,
                     source: str | None = None) -> tuple[int, dict[str, list[int]]]:
    """(seed, task -> episode indices): the first ``episodes`` layouts per task that a run's build
    trained on (its ``metaworld`` source's rollouts in the train split whose expert succeeded).

    Why: a policy that fails on the evaluation seeds may not generalize to new layouts or may not
    fit even the ones it saw; started from its own training episodes' layouts (variation and
    reset), the evaluator tells the two apart. The rollouts are re-simulated without rendering to
    skip those the build dropped (a noisy expert's failures)."""
    from kidata.hashing import in_holdout
    from kidata.pipelines.recipe import Recipe as BuildRecipe

    SceneSettings.from_recipe(recipe, source)  # refuses a mixture without the named metaworld source
    parsed = BuildRecipe.of(recipe)
    config = next(s for s in parsed.sources if s.reader == "metaworld" and source in (None, s.name))
    opened = parsed.open(config)
    holdout = config.holdout if config.holdout is not None else parsed.mixture.holdout
    chosen: dict[str, list[int]] = {}
    for task in resolve_tasks(tasks):
        if task not in opened.tasks:
            raise ValueError(f"{task} is not a training task of source {config.name!r} (its tasks: {list(opened.tasks)})")
        scene = Scene(task, seed=opened.seed, image_size=16)
        try:
            chosen[task] = []
            for index in range(opened.episodes_per_task):
                if len(chosen[task]) == episodes:
                    break
                if not in_holdout(config.name, episode_id(task, opened.seed, index), holdout) and \
                        opened.rollout(scene, index, images=False) is not None:
                    chosen[task].append(index)
        finally:
            scene.close()
        if len(chosen[task]) < episodes:
            raise ValueError(f"{task}: the build trained on {len(chosen[task])} episodes of it "
                             f"({opened.episodes_per_task} rolled out, held-out fraction {holdout}), fewer than "
                             f"the {episodes} asked for: ask for at most {len(chosen[task])}")
    return opened.seed, chosen


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


@dataclass
class _Trace:
    """What one episode did: executed actions [T, 4], each chunk's start step and prediction, and
    the first camera's frame at every query (for the contact sheet)."""

    executed: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    frames: list = field(default_factory=list)


def evaluate_metaworld(policy: Any, tasks: str | Sequence[str], *, episodes: int = 5, chunking: Chunking | None = None,
                       max_steps: int = MAX_EPISODE_STEPS, seed: int = EVAL_SEED, scene: SceneSettings | None = None,
                       out: str | Path | None = None, sheets: int = 1,
                       episode_indices: Mapping[str, Sequence[int]] | None = None, progress: bool = False) -> dict:
    """Success rate per task and their mean, each episode's outcome; with ``out``, for the first
    ``sheets`` episodes of each task a contact sheet and a plot of the executed actions with every
    predicted chunk, and ``metaworld_eval.json``. ``chunking``: how chunks become actions (default:
    the policy's own, ``Chunking.of``: a ``kidata.policy.Policy`` carries its run's ``[policy]``
    replan and temporal ensemble). ``scene`` (default: ``SceneSettings()``) must match the training
    data's rendering. ``episode_indices`` (task -> indices, e.g. from ``training_layouts``) replaces
    episodes 0 .. episodes - 1. A policy with ``counters`` (``kidata.policy.Policy``: FAST chunks,
    invalid ones, the expert's stand-ins) has them reported per task under ``policy_counters``.
    ``progress``: a bar over episodes. The policy infers on one torch thread meanwhile
    (``progress.torch_threads``)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (episodes per task), got {episodes}")
    if max_steps < 1:  # an episode of no step fails without the policy acting: a 0 that measures nothing
        raise ValueError(f"max_steps must be >= 1 (the step budget of an episode), got {max_steps}")
    if scene is not None and scene.image_size < 1:
        raise ValueError(f"image_size must be >= 1 (the rendered cameras' size in pixels), got {scene.image_size}")
    chunking = Chunking.of(policy) if chunking is None else chunking
    chunking.executor()  # refuses a bad replan or ensemble before any simulator starts
    scene = scene or SceneSettings()
    task_names = resolve_tasks(tasks)
    if out is not None:  # refused before the episodes run, not when their results are written
        if Path(out).exists() and not Path(out).is_dir():
            raise FileExistsError(f"{out} is a file, and the evaluation writes its folder of files there: choose another "
                                  "--out")
        Path(out).mkdir(parents=True, exist_ok=True)
    total = sum(len(episode_indices[task]) for task in task_names) if episode_indices is not None else episodes * len(task_names)
    trial = _Trial(policy, chunking, max_steps, seed, scene, out, sheets, getattr(policy, "needs_images", True))
    with torch_threads(1), progress_bar(total=total, desc="episodes", unit="episode", disable=not progress) as bar:
        per_task, lengths, outcomes, counted = _run_tasks(trial, task_names, episodes, episode_indices, bar)
    result = {"success_rate": per_task, "mean_success_rate": float(np.mean(list(per_task.values()))),
              "episodes_per_task": episodes, "replan": chunking.replan, "ensemble": chunking.ensemble,
              "max_steps": max_steps, "seed": seed, "mean_steps": lengths, "episodes": outcomes,
              "scene": {"cameras": dict(scene.cameras), "image_size": scene.image_size,
                        "goal_marker_scale": scene.goal_marker_scale, "privileged_state": scene.privileged_state}}
    if counted:
        result["policy_counters"] = counted
    if episode_indices is not None:
        result["episode_indices"] = {task: [r["episode"] for r in rows] for task, rows in outcomes.items()}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metaworld_eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


@dataclass(frozen=True)
class _Trial:
    """What every episode of one evaluation shares: the policy, how its chunks are executed, the
    step budget, the simulator's seed and scene, and where (and for how many episodes) the
    contact sheets go."""

    policy: Any
    chunking: Chunking
    max_steps: int
    seed: int
    scene: SceneSettings
    out: str | Path | None
    sheets: int
    needs_images: bool


def _run_tasks(trial: _Trial, task_names, episodes, episode_indices, bar) -> tuple[dict, dict, dict, dict]:
    policy, out = trial.policy, trial.out
    per_task, lengths, outcomes, counted = {}, {}, {}, {}
    for task in task_names:
        before = dict(getattr(policy, "counters", {}))
        simulator = Scene(task, seed=trial.seed, image_size=trial.scene.image_size,
                          goal_marker_scale=trial.scene.goal_marker_scale)
        results = []
        try:
            indices = list(episode_indices[task]) if episode_indices is not None else list(range(episodes))
            for order, episode in enumerate(indices):
                keep = out is not None and order < trial.sheets
                trace = _Trace()
                success, steps = _episode(trial, simulator, task, episode, keep, trace)
                results.append({"episode": episode, "success": success, "steps": steps})
                bar.update(1)
                if keep:
                    _contact_sheet(trace.frames, Path(out) / f"{task}-episode{episode}.png", success)
                    plot_chunks(trace, Path(out) / f"{task}-episode{episode}-actions.png", f"{task} episode {episode}")
        finally:
            simulator.close()
        per_task[task] = sum(r["success"] for r in results) / len(results)
        lengths[task] = float(np.mean([r["steps"] for r in results]))
        outcomes[task] = results
        if before:
            counted[task] = {name: value - before[name] for name, value in policy.counters.items()}
    return per_task, lengths, outcomes, counted


def _episode(trial: _Trial, scene: Scene, task: str, episode: int, keep: bool, trace: _Trace) -> tuple[bool, int]:
    cameras, executor = trial.scene.cameras, trial.chunking.executor()
    observation = scene.reset(episode)
    for step in range(trial.max_steps):
        if executor.needs_chunk(step):
            images = {camera: scene.render(name) for camera, name in cameras.items()} if trial.needs_images or keep else {}
            state = robot_state(observation, trial.scene.privileged_state)
            chunk = np.asarray(trial.policy.sample_actions({"images": images, "state": state,
                                                            "prompt": instruction(task), "env_obs": observation,
                                                            "task": task}))
            if keep:
                trace.frames.append(images[next(iter(cameras))])
                trace.chunks.append((step, chunk))
            executor.add(step, chunk)
        action = executor.action(step)
        if keep:
            trace.executed.append(np.asarray(action, dtype=np.float64))
        observation, success = scene.step(to_env_action(action))
        if success:
            return True, step + 1
    return False, trial.max_steps


def plot_chunks(trace: _Trace, path: Path, title: str) -> None:
    """One panel per action dimension: the executed actions (black) and every predicted chunk
    (coloured, from the step it was asked at) — where a policy's chunks disagree with what it then
    does, or jump between queries, shows here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not trace.executed:
        return
    executed = np.stack(trace.executed)
    dims = executed.shape[1]
    names = ["dx", "dy", "dz", "gripper (1 = open)"] + [f"a{i}" for i in range(4, dims)]
    figure, axes = plt.subplots(dims, 1, figsize=(8, 1.6 * dims), sharex=True)
    for dim, axis in enumerate(np.atleast_1d(axes)):
        for start, chunk in trace.chunks:
            axis.plot(range(start, start + len(chunk)), chunk[:, dim], alpha=0.5, linewidth=1)
        axis.plot(executed[:, dim], color="black", linewidth=1.5)
        axis.set_ylabel(names[dim], fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("step")
    figure.suptitle(f"{title}: executed (black) and predicted chunks", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _contact_sheet(frames: list[np.ndarray], path: Path, success: bool, columns: int = 8) -> None:
    from PIL import Image, ImageDraw

    if not frames:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    picked = frames[:: max(1, len(frames) // (columns * 2))][: columns * 2]
    size = picked[0].shape[0]
    rows = -(-len(picked) // columns)
    sheet = Image.new("RGB", (columns * size, rows * size + 14), "white")
    for index, frame in enumerate(picked):
        sheet.paste(Image.fromarray(frame), ((index % columns) * size, 14 + (index // columns) * size))
    ImageDraw.Draw(sheet).text((2, 1), f"{path.stem}: {'success' if success else 'failure'}", fill="black")
    sheet.save(path)
