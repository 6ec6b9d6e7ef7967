"""Meta-World (PyPI ``metaworld``, MuJoCo; extra ``kidata[sim]``): the simulator, kept in its own
process, and the benchmark's scripted expert policies. Demonstrations (``kidata.sources.metaworld``)
and closed-loop evaluation (``kidata.eval.metaworld``) both run through ``Scene``.

* Rendering is offscreen (``MUJOCO_GL=egl`` on CPUs) with shadows and reflections off, which
  roughly halves the cost of a frame; ``corner*`` cameras are rotated 180 degrees (they render
  upside down).
* kidata's action convention: (dx, dy, dz, gripper) with 1 = open; Meta-World's effort is +1 =
  close (``to_env_action`` / ``from_env_action``).
* Everything is a function of (seed, task, episode index): the same variation renders the same
  scene in every process.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Sequence

import numpy as np

# the step budget of one episode: the expert's demonstration rollouts and every closed-loop
# evaluation (a success later than this counts as a failure)
MAX_EPISODE_STEPS = 300

# task (without its version suffix) -> (instruction, what obs[4:7] is)
TASKS: dict[str, tuple[str, str]] = {
    "assembly": ("put the ring on the peg", "the ring"),
    "basketball": ("dunk the ball into the basket", "the ball"),
    "bin-picking": ("move the puck from the left bin to the right bin", "the puck"),
    "box-close": ("put the lid on the box", "the lid"),
    "button-press-topdown": ("press the button from the top", "the button"),
    "button-press-topdown-wall": ("press the button from the top past the wall", "the button"),
    "button-press": ("press the button", "the button"),
    "button-press-wall": ("press the button past the wall", "the button"),
    "coffee-button": ("push the button on the coffee machine", "the coffee machine button"),
    "coffee-pull": ("pull the mug out from the coffee machine", "the mug"),
    "coffee-push": ("push the mug under the coffee machine", "the mug"),
    "dial-turn": ("turn the dial", "the dial"),
    "disassemble": ("take the ring off the peg", "the ring"),
    "door-close": ("close the door", "the door handle"),
    "door-lock": ("lock the door by turning the lock", "the lock"),
    "door-open": ("open the door", "the door handle"),
    "door-unlock": ("unlock the door by turning the lock", "the lock"),
    "hand-insert": ("put the gripper into the hole", "the puck"),
    "drawer-close": ("close the drawer", "the drawer handle"),
    "drawer-open": ("open the drawer", "the drawer handle"),
    "faucet-open": ("turn the faucet on", "the faucet handle"),
    "faucet-close": ("turn the faucet off", "the faucet handle"),
    "hammer": ("hammer the nail into the wall", "the hammer"),
    "handle-press-side": ("press the handle down from the side", "the handle"),
    "handle-press": ("press the handle down", "the handle"),
    "handle-pull-side": ("pull the handle up from the side", "the handle"),
    "handle-pull": ("pull the handle up", "the handle"),
    "lever-pull": ("pull the lever up", "the lever"),
    "pick-place-wall": ("pick up the puck and place it at the goal past the wall", "the puck"),
    "pick-out-of-hole": ("pick the peg out of the hole", "the peg"),
    "pick-place": ("pick up the puck and place it at the goal", "the puck"),
    "plate-slide": ("slide the plate into the cabinet", "the plate"),
    "plate-slide-side": ("slide the plate sideways into the cabinet", "the plate"),
    "plate-slide-back": ("slide the plate out of the cabinet", "the plate"),
    "plate-slide-back-side": ("slide the plate sideways out of the cabinet", "the plate"),
    "peg-insert-side": ("insert the peg into the hole from the side", "the peg"),
    "peg-unplug-side": ("unplug the peg from the side", "the peg"),
    "soccer": ("kick the ball into the goal", "the ball"),
    "stick-push": ("grasp the stick and push the bottle with it", "the stick"),
    "stick-pull": ("grasp the stick and pull the bottle with it", "the stick"),
    "push": ("push the puck to the goal", "the puck"),
    "push-wall": ("push the puck to the goal past the wall", "the puck"),
    "push-back": ("push the puck back to the goal", "the puck"),
    "reach": ("reach the goal", "the puck"),
    "reach-wall": ("reach the goal past the wall", "the puck"),
    "shelf-place": ("put the block on the shelf", "the block"),
    "sweep-into": ("sweep the puck into the hole", "the puck"),
    "sweep": ("sweep the puck off the table", "the puck"),
    "window-open": ("open the window", "the window handle"),
    "window-close": ("close the window", "the window handle"),
}
BENCHMARKS = {
    "MT10": ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
             "peg-insert-side", "window-open", "window-close"),
    "MT50": tuple(TASKS),
}
VERSION = "v3"
# The scripted policies warn about their own gains on every action (metaworld/policies/policy.py);
# the environment clips actions as documented, and a build printed ~20 copies per worker.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
DEFAULT_CAMERAS = {"base_0": "corner", "left_wrist_0": "gripperPOV"}
SETTLE_STEPS = 5
VARIATION_BLOCK_SEED = 1_000_003  # seed step between blocks of 50 variations (far from EVAL_SEED's blocks)


def task_key(task: str) -> str:
    """'pick-place-v3' -> 'pick-place' (instructions hold for every version of a task)."""
    return re.sub(r"-v\d+$", "", task)


def episode_id(task: str, seed: int, episode: int) -> str:
    """The id of an expert episode: what the build's held-out split hashes, so the evaluator can
    find which layouts a run trained on."""
    return f"{task}-s{seed}-e{episode:05d}"


def instruction(task: str) -> str:
    try:
        return TASKS[task_key(task)][0]
    except KeyError:
        raise KeyError(f"unknown Meta-World task {task!r} (tasks: {sorted(TASKS)})") from None


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """A benchmark name ('MT10', 'MT50') or task names -> versioned env names ('reach-v3')."""
    names = [tasks] if isinstance(tasks, str) else list(tasks) if isinstance(tasks, Sequence) else None
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"tasks = {tasks!r}: expected a benchmark name ({', '.join(sorted(BENCHMARKS))}) or a list of "
                         "task names, e.g. [\"reach\", \"push\"]")
    names = [task for name in names for task in (BENCHMARKS.get(name) or (name,))]
    out = []
    for name in names:
        instruction(name)  # validates
        out.append(name if re.search(r"-v\d+$", name) else f"{name}-{VERSION}")
    return out


def robot_state(observation: np.ndarray, privileged: bool = False) -> np.ndarray:
    """The state a policy is given, float32: hand position and gripper opening [4]; with
    ``privileged`` also the first object's and the goal's positions [10] — a diagnostic that
    bypasses perception (README, Meta-World), never a benchmark setting."""
    observation = np.asarray(observation)
    parts = [observation[:4]] + ([observation[4:7], observation[-3:]] if privileged else [])
    return np.concatenate(parts).astype(np.float32)


def to_env_action(action: np.ndarray) -> np.ndarray:
    """kidata's standard action (gripper 1 = open) -> Meta-World's (gripper effort +1 = close)."""
    action = np.asarray(action, dtype=np.float64).copy()
    action[..., 3] = 1.0 - 2.0 * action[..., 3]
    return np.clip(action, -1.0, 1.0)


def from_env_action(action: np.ndarray) -> np.ndarray:
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    out = action.copy()
    out[..., 3] = (1.0 - action[..., 3]) / 2.0
    return out


class SceneProcessError(Exception):
    """The traceback of a failure inside a scene's process, as text (the cause of the parent's one-line error)."""


class Scene:
    """One task's environment at seeded variations, simulated and rendered in a spawned child
    process. MuJoCo's EGL renderer and TensorFlow crash when they share a process (measured here:
    rendering, then importing TensorFlow, segfaults; so does the reverse order), and a build may
    read RLDS (TensorFlow) and Meta-World in one worker, so the renderer always lives apart. A call
    costs a pipe round trip (~0.1 ms) next to ~1 ms of simulation and ~25 ms of rendering."""

    def __init__(self, task: str, *, seed: int, image_size: int = 128, goal_marker_scale: float = 1.0) -> None:
        import multiprocessing

        self.task, self.seed, self.image_size = task, seed, image_size
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, task, seed, image_size, goal_marker_scale),
                                        daemon=True)
        self._process.start()
        child.close()
        self.dt, self.variation_count, self.has_goal_marker = self._call("info")

    def _call(self, command: str, *args: Any) -> Any:
        self._connection.send((command, args))
        status, value = self._connection.recv()
        if status == "error":  # the child's one line in the message; its traceback is the cause --debug shows
            line, trace = value
            raise RuntimeError(f"Meta-World scene {self.task!r} ({command}): {line}") from SceneProcessError(trace)
        return value

    def reset(self, episode: int) -> np.ndarray:
        """Observation float64 [39] at the start of episode ``episode`` (variation + seed)."""
        return self._call("reset", episode)

    def step(self, env_action: np.ndarray) -> tuple[np.ndarray, bool]:
        return self._call("step", np.asarray(env_action, dtype=np.float32))

    def render(self, camera: str) -> np.ndarray:
        """uint8 [S, S, 3] upright."""
        return self._call("render", camera)

    def project(self, point: np.ndarray, camera: str) -> tuple[float, float] | None:
        """(y, x) in [0, 1] of a world point in ``camera``'s upright image, None when behind it."""
        return self._call("project", np.asarray(point, dtype=np.float64), camera)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._call("close")
            except (EOFError, OSError, RuntimeError):
                pass
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
        self._connection.close()


def _serve(connection, task: str, seed: int, image_size: int, goal_marker_scale: float = 1.0) -> None:
    """The child process behind a ``Scene``: answers (command, args) messages until "close"."""
    import traceback

    scene = _LocalScene(task, seed=seed, image_size=image_size, goal_marker_scale=goal_marker_scale)
    while True:
        command, args = connection.recv()
        try:
            if command == "info":
                value = (scene.dt, len(scene.variations), scene.has_goal_marker)
            elif command == "close":
                scene.close()
                connection.send(("ok", None))
                return
            else:
                value = getattr(scene, command)(*args)
            connection.send(("ok", value))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises
            connection.send(("error", (f"{type(error).__name__}: {error}", traceback.format_exc(limit=4))))


class _LocalScene:
    """The environment and renderer themselves (inside the child process).

    ``goal_marker_scale`` enlarges the task's goal marker (the ``goal`` site: a 2 cm ball in
    reach, push, pick-place, ...), which only the renderer sees: sites take no part in contacts,
    and success is computed from positions. At 96-112 px Meta-World's own marker covers 1-2 pixels
    of the ``corner`` view, less than a patch of the vision tower sees as a feature; a policy that
    must find the goal in the image (reach, push) cannot (measured: README, Meta-World)."""

    def __init__(self, task: str, *, seed: int, image_size: int = 128, goal_marker_scale: float = 1.0) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import metaworld
        import mujoco

        self.task, self.seed, self.image_size = task, seed, image_size
        self._benchmark = metaworld.MT1(task, seed=seed)
        self.env = self._benchmark.train_classes[task]()
        self.variations = self._benchmark.train_tasks
        self._blocks: dict[int, list] = {}
        self._renderer = None
        self._mujoco = mujoco
        goal = mujoco.mj_name2id(self.env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        # the goal ball is drawn where the observation's last 3 values say (reach, push, ...);
        # button-press-topdown has no such site
        self.has_goal_marker = bool(goal >= 0 and self.env.model.site_rgba[goal][3] > 0)
        if goal >= 0 and goal_marker_scale != 1.0:
            self.env.model.site_size[goal] *= goal_marker_scale

    def reset(self, episode: int) -> np.ndarray:
        """Observation float64 [39] at the start of episode ``episode`` (variation + seed)."""
        self.env.set_task(self.variation(episode))
        observation, _ = self.env.reset(seed=self.seed * 100_003 + episode)
        return observation

    def variation(self, episode: int):
        """Episode e's task variation (object and goal positions). Meta-World's MT1 draws 50 per
        seed; episodes past them take the next block of 50 from MT1 at another seed, so every
        episode is a new layout. (Repeating the 50 would repeat the same rollouts: set_task fixes
        the positions, the reset seed does not move them.)"""
        block, index = divmod(episode, len(self.variations))
        if block == 0:
            return self.variations[index]
        if block not in self._blocks:
            import metaworld

            self._blocks[block] = metaworld.MT1(self.task, seed=self.seed + VARIATION_BLOCK_SEED * block).train_tasks
        return self._blocks[block][index]

    def step(self, env_action: np.ndarray) -> tuple[np.ndarray, bool]:
        observation, _, _, _, info = self.env.step(np.asarray(env_action, dtype=np.float32))
        return observation, bool(info.get("success", False))

    @property
    def dt(self) -> float:
        return float(self.env.dt)

    def render(self, camera: str) -> np.ndarray:
        """uint8 [S, S, 3] upright."""
        if self._renderer is None:
            self._renderer = self._mujoco.Renderer(self.env.model, self.image_size, self.image_size)
            flags = self._renderer.scene.flags
            flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[self._mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._renderer.update_scene(self.env.data, camera=camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1, ::-1]) if camera.startswith("corner") else image.copy()

    def project(self, point: np.ndarray, camera: str) -> tuple[float, float] | None:
        """(y, x) in [0, 1] of a world point in ``camera``'s upright image, None when behind it."""
        model, data = self.env.model, self.env.data
        index = model.camera(camera).id
        relative = data.cam_xmat[index].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[index])
        if relative[2] >= 0:  # MuJoCo cameras look down their -z axis
            return None
        focal = 0.5 / np.tan(np.deg2rad(model.cam_fovy[index]) / 2)
        x = 0.5 + focal * relative[0] / -relative[2]
        y = 0.5 - focal * relative[1] / -relative[2]
        if camera.startswith("corner"):
            x, y = 1.0 - x, 1.0 - y
        return float(y), float(x)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()


def expert(task: str):
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()
