"""A privileged behaviour-cloning baseline: what the demonstrations support, without perception.

A small MLP reads the simulator's full observation (hand, gripper, object and goal positions:
float [39]) and the task (one-hot), and predicts the expert's action chunk [H, 4]. It is trained on
the recipe's own Meta-World episodes (re-simulated without rendering: rollouts are a function of
(seed, task, episode), so they are the build's episodes; the build's held-out episodes stay out)
and evaluated by the same closed-loop evaluator as a VLA. If it succeeds where the VLA fails, the
data is sufficient and the gap is perception or the model; if it fails too, the data (episodes,
horizon, replanning) is the limit.

    kidata eval privileged --recipe pipelines/metaworld.toml --episodes 20 --out runs/privileged
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kidata.envs.metaworld import MAX_EPISODE_STEPS
from kidata.eval.chunking import Chunking

OBSERVATION_DIM = 39  # Meta-World's observation: hand (3), gripper (1), objects (14), previous frame (18), goal (3)


@dataclass(frozen=True)
class Demonstrations:
    """features float32 [N, 39 + tasks]; chunks float32 [N, H, 4] (actions from each step on, the
    last action repeated past the episode's end); valid bool [N, H]."""

    tasks: tuple[str, ...]
    features: np.ndarray
    chunks: np.ndarray
    valid: np.ndarray
    episodes: int


def collect(recipe_path: str | Path, *, source_name: str | None = None, horizon: int | None = None) -> Demonstrations:
    """The training episodes of the recipe's ``metaworld`` source, with full observations."""
    from kidata.envs.metaworld import Scene
    from kidata.hashing import in_holdout
    from kidata.pipelines.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    configs = [s for s in recipe.sources if s.reader == "metaworld" and (source_name in (None, s.name))]
    if not configs:
        raise ValueError(f"{recipe_path}: no metaworld source{f' named {source_name!r}' if source_name else ''} "
                         f"(sources: {[s.name for s in recipe.sources]})")
    config = configs[0]
    source = recipe.open(config)
    holdout = config.holdout if config.holdout is not None else recipe.mixture.holdout
    horizon = horizon or recipe.mixture.action_horizon
    features, chunks, valid, count = [], [], [], 0
    for index, task in enumerate(source.tasks):
        scene = Scene(task, seed=source.seed, image_size=16)
        try:
            for episode in range(source.episodes_per_task):
                rollout = source.rollout(scene, episode, images=False, env_observations=True)
                if rollout is None or in_holdout(config.name, rollout.episode_id, holdout):
                    continue
                count += 1
                steps = rollout.steps
                onehot = np.zeros((steps, len(source.tasks)), dtype=np.float32)
                onehot[:, index] = 1
                features.append(np.concatenate([rollout.metadata["env_obs"].astype(np.float32), onehot], axis=1))
                ahead = np.arange(steps)[:, None] + np.arange(horizon)[None]
                chunks.append(rollout.actions[np.minimum(ahead, steps - 1)])
                valid.append(ahead < steps)
        finally:
            scene.close()
    return Demonstrations(tuple(source.tasks), np.concatenate(features), np.concatenate(chunks).astype(np.float32),
                          np.concatenate(valid), count)


class MlpPolicy(torch.nn.Module):
    """[39 + tasks] -> [H, 4]; inputs and outputs standardized with the training set's moments."""

    def __init__(self, inputs: int, horizon: int, action_dim: int = 4, hidden: int = 256) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.GELU(), torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, horizon * action_dim))
        for name in ("in_mean", "in_std"):
            self.register_buffer(name, torch.zeros(inputs))
        for name in ("out_mean", "out_std"):
            self.register_buffer(name, torch.zeros(action_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features float [B, inputs] -> actions float [B, H, A] in the robot's units."""
        out = self.net((features - self.in_mean) / self.in_std).view(-1, self.horizon, self.action_dim)
        return out * self.out_std + self.out_mean


def train_mlp(data: Demonstrations, *, steps: int = 3000, batch_size: int = 256, lr: float = 1e-3,
              seed: int = 0) -> tuple[MlpPolicy, list[float]]:
    """Masked MSE on standardized actions; returns the model and its loss every 100 steps."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    features, chunks = torch.from_numpy(data.features), torch.from_numpy(data.chunks)
    valid = torch.from_numpy(data.valid)
    model = MlpPolicy(features.shape[1], chunks.shape[1], chunks.shape[2])
    model.in_mean.copy_(features.mean(0))
    model.in_std.copy_(features.std(0).clamp_min(1e-3))  # constant columns (padding, one-hot of one task)
    model.out_mean.copy_(chunks.mean((0, 1)))
    model.out_std.copy_(chunks.std((0, 1)).clamp_min(1e-3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.05)
    losses = []
    for step in range(steps):
        rows = torch.randint(0, len(features), (batch_size,), generator=generator)
        error = ((model(features[rows]) - chunks[rows]) / model.out_std) ** 2
        loss = (error.mean(-1) * valid[rows]).sum() / valid[rows].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 6))
    return model.eval(), losses


class PrivilegedPolicy:
    """The MLP as a closed-loop policy: reads ``env_obs`` and ``task``, never the images."""

    needs_images = False

    def __init__(self, model: MlpPolicy, tasks: tuple[str, ...]) -> None:
        self.model, self.tasks = model, tasks

    @torch.no_grad()
    def sample_actions(self, observation: Mapping[str, Any]) -> np.ndarray:
        task = observation["task"]
        if task not in self.tasks:
            raise KeyError(f"the privileged baseline was trained on {list(self.tasks)}, not {task!r}")
        onehot = np.zeros(len(self.tasks), dtype=np.float32)
        onehot[self.tasks.index(task)] = 1
        features = np.concatenate([np.asarray(observation["env_obs"], dtype=np.float32), onehot])
        return self.model(torch.from_numpy(features)[None])[0].double().numpy()


def run_baseline(recipe_path: str | Path, *, episodes: int = 20, replan: int = Chunking.replan,
                 max_steps: int = MAX_EPISODE_STEPS,
                 steps: int = 3000, source_name: str | None = None, out: str | Path | None = None) -> dict:
    """Collect, train, evaluate closed-loop; ``out`` gets ``privileged.json`` and the evaluator's files."""
    from kidata.eval.metaworld import evaluate_metaworld

    began = time.perf_counter()
    data = collect(recipe_path, source_name=source_name)
    model, losses = train_mlp(data, steps=steps)
    trained = time.perf_counter()
    result = evaluate_metaworld(PrivilegedPolicy(model, data.tasks), list(data.tasks), episodes=episodes,
                                chunking=Chunking(replan), max_steps=max_steps, out=out)
    report = {"episodes_trained": data.episodes, "samples": int(len(data.features)), "train_steps": steps,
              "losses_every_100": losses, "seconds_collect_and_train": round(trained - began, 1),
              "closed_loop": result}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "privileged.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
