"""Meta-World (PyPI ``metaworld``, MuJoCo; extra ``kidata[sim]``): real demonstrations from the
benchmark's scripted expert policies, as standard Episodes, and VLM questions about the same scenes
answered from simulator state.

An episode: the expert acts from a seeded task variation until it succeeds (plus a few settling
steps) or ``max_steps`` pass; failed rollouts are kept out and counted (``expert_failed``).

* state float32 [T, 4]: hand position (x, y, z) and gripper opening (the proprioceptive part of
  the 39-d observation; object and goal positions stay out).
* actions float32 [T, 4]: the expert's (dx, dy, dz) and gripper in kidata's convention
  (1 = open; Meta-World's effort is +1 = close), clipped to the action space as the env does.
* images: rendered offscreen (``MUJOCO_GL=egl`` on CPUs) with shadows and reflections off, which
  roughly halves the cost of a frame; ``corner*`` cameras are rotated 180 degrees (they render
  upside down).
* ``action_noise`` (DART, Laskey et al. 2017): the simulator executes the expert's action plus
  Gaussian noise of that standard deviation (per dimension, in the action space's [-1, 1] units)
  while the episode records the expert's clean action at every state visited. The demonstrations
  then cover states off the expert's own path, labelled with how the expert recovers from them:
  what a policy needs closed-loop, where its own small errors carry it off that path.
  The noise is drawn from (seed, task, episode), so both passes see the same rollouts.
* fps = 1 / env.dt = 80. Work units are (task, episode range); everything is a function of
  (seed, task, episode index), so pass 1 (no rendering) and pass 2 see the same rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kidata.envs.metaworld import (
    DEFAULT_CAMERAS,
    MAX_EPISODE_STEPS,
    SETTLE_STEPS,
    TASKS,
    Scene,
    episode_id,
    expert,
    from_env_action,
    instruction,
    resolve_tasks,
    robot_state,
    task_key,
)
from kidata.hashing import stable_seed_words
from kidata.schema import Episode, Frames, VlmExample
from kidata.sources.base import ReadReport, WorkUnit, split_range
from kidata.sources.registry import register_reader
from kidata.sources.vlm import VlmSource


@dataclass(frozen=True)
class MetaWorldSource:
    """``reader = "metaworld"``: tasks (names or a benchmark), episodes per task, cameras
    (standard camera -> Meta-World camera), render size, step budget, goal marker size."""

    tasks: tuple[str, ...]
    episodes_per_task: int = 10
    seed: int = 0
    cameras: Mapping[str, str] = None  # type: ignore[assignment]
    image_size: int = 128
    max_steps: int = MAX_EPISODE_STEPS
    goal_marker_scale: float = 1.0
    privileged_state: bool = False
    action_noise: float = 0.0
    name: str = "metaworld"
    kind: str = "robot"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.action_noise) and self.action_noise >= 0.0):
            raise ValueError(f"metaworld source {self.name!r}: action_noise must be a standard deviation >= 0, "
                             f"got {self.action_noise}")
        object.__setattr__(self, "tasks", tuple(resolve_tasks(self.tasks)))
        cameras = self.cameras or DEFAULT_CAMERAS
        if not isinstance(cameras, Mapping) or not all(isinstance(v, str) and v for v in cameras.values()):
            raise ValueError(f"metaworld source {self.name!r}: cameras = {cameras!r}: expected a table of standard "
                             "camera = Meta-World camera, e.g. { base_0 = \"corner\", left_wrist_0 = \"gripperPOV\" }")
        object.__setattr__(self, "cameras", dict(cameras))

    def list_units(self, count: int) -> list[WorkUnit]:
        per_task = max(1, -(-count // len(self.tasks)))
        return [WorkUnit(self.name, task, a, b) for task in self.tasks
                for a, b in split_range(self.episodes_per_task, per_task)]

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        report = report if report is not None else ReadReport()
        scene = Scene(unit.part, seed=self.seed, image_size=self.image_size, goal_marker_scale=self.goal_marker_scale)
        try:
            for episode in range(unit.start, unit.stop):
                result = self.rollout(scene, episode, images=images)
                if result is None:
                    report.quarantine("expert_failed", f"{unit.part}/{episode}")
                else:
                    yield result
        finally:
            scene.close()

    def episodes(self, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        for unit in self.list_units(1):
            yield from self.read(unit, images=images, report=report)

    def rollout(self, scene: Scene, episode: int, *, images: bool = True, env_observations: bool = False) -> Episode | None:
        """One expert episode; with ``env_observations`` its metadata also holds the simulator's
        full observations float64 [T, 39] (hand, objects, goal: what privileged baselines read)."""
        policy = expert(scene.task)
        noise = np.random.default_rng(stable_seed_words(self.seed, scene.task, episode, "action_noise"))
        observation = scene.reset(episode)
        variation = episode  # its own layout: see _LocalScene.variation
        states, actions, frames, full = [], [], {camera: [] for camera in self.cameras}, []
        success_at = None
        for step in range(self.max_steps):
            env_action = np.clip(policy.get_action(observation), -1.0, 1.0)
            states.append(robot_state(observation, self.privileged_state))
            full.append(observation)
            actions.append(from_env_action(env_action).astype(np.float32))
            if images:
                for camera, name in self.cameras.items():
                    frames[camera].append(scene.render(name))
            if self.action_noise > 0.0:
                env_action = np.clip(env_action + noise.normal(0.0, self.action_noise, env_action.shape), -1.0, 1.0)
            observation, success = scene.step(env_action)
            if success and success_at is None:
                success_at = step + 1
            if success_at is not None and step + 1 >= success_at + SETTLE_STEPS:
                break
        if success_at is None:
            return None
        return Episode(
            episode_id=episode_id(scene.task, self.seed, episode), source=self.name,
            state=np.stack(states), actions=np.stack(actions), instructions=(instruction(scene.task),),
            fps=1.0 / scene.dt,
            images={camera: Frames(np.stack(f)) for camera, f in frames.items()} if images else {},
            metadata={"task": scene.task, "success": True, "steps_to_success": success_at,
                      "variation": variation, **({"env_obs": np.stack(full)} if env_observations else {})},
        )


class MetaWorldSceneSource(VlmSource):
    """``reader = "metaworld_scenes"``: questions about simulated scenes answered from simulator
    state, no download. Per scene (a task variation, an expert-driven moment of its rollout):

    * vqa "what should the robot do?" -> the task's instruction;
    * vqa "is the gripper open or closed?" -> open / closed (from the finger opening);
    * vqa "is <object> left or right of the gripper?" -> left / right (in the image);
    * point "<object>" -> its projected (y, x) when ``pointing`` (needs <loc> tokens, so the build
      must keep FAST ids off them);
    * in tasks with a goal marker (reach, push, pick-place, ...): vqa "is the goal left or right of
      the gripper?" and, when ``pointing``, point "goal" -> the goal's projected (y, x). These ask
      for exactly what a policy must find in the image to reach or push (README, Meta-World).

    ``camera`` and ``goal_marker_scale`` should match the robot source's, so that the questions are
    asked about the images the policy sees."""

    def __init__(self, tasks: str | Sequence[str], *, scenes_per_task: int = 10, seed: int = 0,
                 camera: str = "corner", image_size: int = 128, pointing: bool = False,
                 goal_marker_scale: float = 1.0, name: str = "metaworld_scenes") -> None:
        super().__init__(name, image_size=image_size)
        self.tasks = resolve_tasks(tasks)
        self.scenes_per_task, self.seed, self.camera, self.pointing = scenes_per_task, seed, camera, pointing
        self.goal_marker_scale = goal_marker_scale

    def _records(self) -> list[tuple[str, int]]:
        return [(task, index) for task in self.tasks for index in range(self.scenes_per_task)]

    def _record_id(self, record: tuple[str, int]) -> str:
        return f"{record[0]}-s{self.seed}-q{record[1]:05d}"

    def read(self, unit: WorkUnit, *, report: ReadReport | None = None, **_: Any) -> Iterator[VlmExample]:
        report = report if report is not None else ReadReport()
        scenes: dict[str, Scene] = {}
        try:
            for record in self.records[unit.start : unit.stop]:
                if record[0] not in scenes:
                    scenes[record[0]] = Scene(record[0], seed=self.seed + 7919, image_size=self.image_size,
                                              goal_marker_scale=self.goal_marker_scale)
                yield from self._scene_examples(scenes[record[0]], record, report)
        finally:
            for scene in scenes.values():
                scene.close()

    def _example(self, record, report):  # pragma: no cover - read() renders whole scenes instead
        raise NotImplementedError

    def _scene_examples(self, scene: Scene, record: tuple[str, int], report: ReadReport) -> Iterator[VlmExample]:
        task, index = record
        observation = scene.reset(index)
        policy = expert(task)
        rng = np.random.default_rng([self.seed, index, len(task)])
        for _ in range(int(rng.integers(0, 40))):  # a moment of the expert's rollout
            observation, _ = scene.step(np.clip(policy.get_action(observation), -1, 1))
        image = scene.render(self.camera)
        base = self._record_id(record)
        label = TASKS[task_key(task)][1]
        yield VlmExample(f"{base}-task", self.name, "vqa", image, prompt="what should the robot do?",
                         targets=(instruction(task),))
        opening = "open" if observation[3] > 0.5 else "closed"
        yield VlmExample(f"{base}-gripper", self.name, "vqa", image, prompt="is the gripper open or closed?",
                         targets=(opening,))
        hand, thing = scene.project(observation[:3], self.camera), scene.project(observation[4:7], self.camera)
        if hand is None or thing is None or not all(0 <= v <= 1 for v in (*hand, *thing)):
            report.quarantine("object_out_of_view", base)
            return
        where = {"hand_yx": hand, "object_yx": thing}
        yield VlmExample(f"{base}-side", self.name, "vqa", image, prompt=f"is {label} left or right of the gripper?",
                         targets=(_side(thing, hand),), metadata=where)
        if self.pointing:
            yield VlmExample(f"{base}-point", self.name, "point", image, prompt=label.removeprefix("the "),
                             points=np.asarray([thing], dtype=np.float32), labels=(label,), metadata=where)
        if not scene.has_goal_marker:
            return
        goal = scene.project(observation[-3:], self.camera)
        if goal is None or not all(0 <= v <= 1 for v in goal):
            report.quarantine("goal_out_of_view", base)
            return
        where = {"hand_yx": hand, "goal_yx": goal}
        yield VlmExample(f"{base}-goalside", self.name, "vqa", image, prompt="is the goal left or right of the gripper?",
                         targets=(_side(goal, hand),), metadata=where)
        if self.pointing:
            yield VlmExample(f"{base}-goalpoint", self.name, "point", image, prompt="goal",
                             points=np.asarray([goal], dtype=np.float32), labels=("goal",), metadata=where)


def _side(thing: tuple[float, float], hand: tuple[float, float]) -> str:
    """Left or right of the gripper in the (upright) image: x of (y, x)."""
    return "left" if thing[1] < hand[1] else "right"


@register_reader("metaworld", kind="robot",
                 options=("tasks", "episodes_per_task", "seed", "cameras", "image_size", "max_steps", "goal_marker_scale",
                          "privileged_state", "action_noise"))
def open_metaworld(options, *, name: str, image_size: int, seed: int = 0) -> MetaWorldSource:
    return MetaWorldSource(options["tasks"], episodes_per_task=int(options.get("episodes_per_task", 10)),
                           seed=int(options.get("seed", seed)), cameras=options.get("cameras"),
                           image_size=int(options.get("image_size", image_size)),
                           max_steps=int(options.get("max_steps", MAX_EPISODE_STEPS)),
                           goal_marker_scale=float(options.get("goal_marker_scale", 1.0)),
                           privileged_state=bool(options.get("privileged_state", False)),
                           action_noise=float(options.get("action_noise", 0.0)), name=name)


@register_reader("metaworld_scenes", kind="vlm",
                 options=("tasks", "scenes_per_task", "seed", "camera", "image_size", "pointing", "goal_marker_scale"),
                 loc_tokens=lambda options: bool(options.get("pointing")))
def open_metaworld_scenes(options, *, name: str, image_size: int, seed: int = 0) -> MetaWorldSceneSource:
    return MetaWorldSceneSource(options["tasks"], scenes_per_task=int(options.get("scenes_per_task", 10)),
                                seed=int(options.get("seed", seed)), camera=options.get("camera", "corner"),
                                image_size=int(options.get("image_size", image_size)),
                                pointing=bool(options.get("pointing", False)),
                                goal_marker_scale=float(options.get("goal_marker_scale", 1.0)), name=name)
