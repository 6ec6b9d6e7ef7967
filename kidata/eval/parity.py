"""Train/eval parity: does the policy see at evaluation exactly what the model saw in training?

For held-out samples of a run's mixture, the same moment is rebuilt twice:

* data path: the build's shard sample -> ``MixtureDataset`` (no augmentation) -> ``collate``, cut
  to what the action expert sees in training (``expert_prompt``: the prompt, and a subtask row's
  subtask text);
* policy path: the episode re-simulated to the sample's step in a live ``Scene`` (rollouts are a
  function of seed, task and episode), rendered with the run's scene settings ->
  ``Policy.batch`` (for a subtask row, with the row's subtask as the policy would have generated it).

The model inputs are compared tensor by tensor. Tokens, masks and state must be equal; images may
differ only by the shards' JPEG coding. A swapped camera, a flipped image, a state in another
layout or normalization, a different prompt: each shows as a named tensor that differs.

    kidata eval metaworld --run RUN --check-parity
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

# Images: mean absolute difference in [-1, 1] units that JPEG coding of a render stays under
# (quality 95 on 112 px Meta-World frames: 0.009-0.011 per camera, max 0.14); a flipped or swapped camera is > 0.1.
IMAGE_TOLERANCE = 0.02
EPISODE_ID = re.compile(r"^(?P<task>.+)-s(?P<seed>\d+)-e(?P<episode>\d+)$")
EXACT = ("image_mask", "tokens", "token_mask", "ar", "prefix_length", "expert_context", "state_dim_mask")


def check_parity(policy: Any, *, samples: int = 4, split: str = "val", manifest_path: str | None = None) -> dict:
    """{"ok": bool, "samples": [{"key", "tensors": {name: {"max_abs_diff", ...,"ok"}}}]}."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:  # 0 compared nothing, then blamed the split
        raise ValueError(f"samples must be >= 1 (held-out samples compared; --episodes with --check-parity), got {samples!r}")
    from kidata.envs.metaworld import Scene, expert, instruction, robot_state
    from kidata.eval.metaworld import SceneSettings
    from kidata.loader.collate import collate, expert_prompt
    from kidata.loader.mixture import MixtureDataset, MixtureSettings
    from kidata.manifest import BuildDir

    manifest_path = manifest_path or policy.config.data.manifest
    scene_settings = SceneSettings.from_recipe(policy.manifest.recipe, policy.source)
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(split=split, shuffle_buffer=1), augment=None)
    model = policy.config.model
    report, scenes = [], {}
    try:
        for sample in dataset:
            if len(report) >= samples:
                break
            meta = sample["meta"]
            if meta.get("source") != policy.source:
                continue
            match = EPISODE_ID.match(meta["episode"])
            if match is None:
                raise ValueError(f"episode id {meta['episode']!r} is not a Meta-World rollout's (task-sSEED-eINDEX)")
            task, seed, episode = match["task"], int(match["seed"]), int(match["episode"])
            if (task, seed) not in scenes:
                scenes[(task, seed)] = Scene(task, seed=seed, image_size=scene_settings.image_size,
                                             goal_marker_scale=scene_settings.goal_marker_scale)
            scene = scenes[(task, seed)]
            observation = scene.reset(episode)
            scripted = expert(task)
            for _ in range(meta["step"]):
                observation, _ = scene.step(np.clip(scripted.get_action(observation), -1.0, 1.0))
            live = {"images": {camera: scene.render(name) for camera, name in scene_settings.cameras.items()},
                    "state": robot_state(observation, scene_settings.privileged_state), "prompt": instruction(task)}
            from_policy = policy.batch(live, subtask=meta.get("subtask")) if policy.generates_subtask else policy.batch(live)
            from_data = expert_prompt(collate([sample], max_tokens=len(sample["tokens"]), action_dim=model.action_dim,
                                            action_horizon=model.action_horizon, state_dim=model.state_dim,
                                            cameras=policy.config.data.cameras, image_size=model.image_size))
            report.append({"key": sample.get("__key__", meta["episode"]), "episode": meta["episode"],
                           "step": meta["step"], "tensors": compare(from_data, from_policy)})
    finally:
        for scene in scenes.values():
            scene.close()
    if not report:
        raise ValueError(f"no {split!r} samples of source {policy.source!r} in {manifest_path}")
    return {"ok": all(t["ok"] for r in report for t in r["tensors"].values()), "samples": report,
            "image_tolerance": IMAGE_TOLERANCE}


def compare(data: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per model input: equal (tokens, masks), close (state: 1e-5), or within JPEG noise (images).
    Token streams are compared over what the expert sees (the live batch holds only the prompt)."""
    length = int(live["expert_context"][0])
    out: dict[str, dict] = {}
    for name in EXACT:
        a, b = data[name][0].cpu(), live[name][0].cpu()
        if a.dim() == 1 and name not in ("image_mask", "state_dim_mask"):
            a, b = a[:length], b[:length]
        same = a.shape == b.shape and torch.equal(a, b)
        out[name] = {"ok": same, "data": _short(a), "policy": _short(b)} if not same else {"ok": True}
    state_mask = live["state_dim_mask"][0].cpu()
    state_diff = float(torch.cat([(data["state"][0].cpu() - live["state"][0].cpu())[state_mask].abs(),
                                  torch.zeros(1)]).max())
    out["state"] = {"ok": state_diff <= 1e-5, "max_abs_diff": state_diff}
    images = {}
    for column in range(live["images"].shape[1]):
        difference = (data["images"][0, column].cpu() - live["images"][0, column].cpu()).abs()
        images[column] = (float(difference.mean()), float(difference.max()))
    worst = max((mean for mean, _ in images.values()), default=0.0)
    out["images"] = {"ok": worst <= IMAGE_TOLERANCE, "mean_abs_diff_per_camera": [round(m, 5) for m, _ in images.values()],
                     "max_abs_diff_per_camera": [round(m, 5) for _, m in images.values()]}
    return out


def _short(tensor: torch.Tensor) -> list:
    return tensor.flatten()[:24].tolist()
