"""Generated robot-like action chunks for demos, tests and benchmarks (no download needed).

Arm motion is a sequence of minimum-jerk reaches between random joint-space waypoints (the
smooth, low-frequency signal real teleoperation data has, which is what FAST compresses), plus
sensor-like noise and a binary gripper that switches a few times per episode.
"""

from __future__ import annotations

import numpy as np


def minimum_jerk_episodes(
    episodes: int, steps: int, arm_dims: int, *, seed: int = 0, noise: float = 0.01
) -> np.ndarray:
    """Actions float64 [episodes, steps, arm_dims + 1] in [-1, 1]; the last dimension is a gripper
    in {-1, 1}."""
    rng = np.random.default_rng(seed)
    actions = np.empty((episodes, steps, arm_dims + 1))
    for episode in range(episodes):
        boundaries = np.sort(rng.choice(np.arange(8, steps - 8), size=max(1, steps // 40), replace=False))
        segments = np.diff(np.concatenate([[0], boundaries, [steps]]))
        waypoints = rng.uniform(-0.8, 0.8, (len(segments) + 1, arm_dims))
        pieces = []
        for index, length in enumerate(segments):
            phase = np.linspace(0.0, 1.0, length, endpoint=False)[:, None]
            blend = 10 * phase**3 - 15 * phase**4 + 6 * phase**5
            pieces.append(waypoints[index] + (waypoints[index + 1] - waypoints[index]) * blend)
        arm = np.concatenate(pieces) + rng.normal(0.0, noise, (steps, arm_dims))
        switches = np.sort(rng.choice(steps, size=rng.integers(1, 4), replace=False))
        gripper = np.where(np.searchsorted(switches, np.arange(steps), side="right") % 2, -1.0, 1.0)
        actions[episode, :, :arm_dims] = arm
        actions[episode, :, arm_dims] = gripper
    return np.clip(actions, -1.0, 1.0)


def chunk_episodes(actions: np.ndarray, horizon: int, stride: int = 1) -> np.ndarray:
    """All chunks actions[e, t : t + horizon] that fit inside an episode, [N, horizon, D]."""
    episodes, steps, dim = actions.shape
    starts = np.arange(0, steps - horizon + 1, stride)
    index = starts[:, None] + np.arange(horizon)[None, :]
    return actions[:, index].reshape(-1, horizon, dim)


def action_chunks(
    count: int, horizon: int, dim: int, *, seed: int = 0, episode_steps: int = 200
) -> np.ndarray:
    """``count`` chunks [count, horizon, dim] cut every 4 steps from generated episodes.

    With dim >= 2 the last dimension is the gripper; with dim == 1 it is a single arm joint.
    """
    if horizon > episode_steps - 16:
        raise ValueError(f"horizon {horizon} needs episode_steps > {horizon + 16}")
    per_episode = (episode_steps - horizon) // 4 + 1
    episodes = -(-count // per_episode)
    actions = minimum_jerk_episodes(episodes, episode_steps, max(dim - 1, 1), seed=seed)
    return chunk_episodes(actions[:, :, :dim], horizon, stride=4)[:count]
