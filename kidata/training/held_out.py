"""Held-out evaluation: does the policy act well, and does the backbone keep its knowledge?

On batches of the build's ``val`` split (episodes / examples held out by the recipe):

* ``action_mse`` (and ``action_mse_dim``: per dimension, ``action_mse_step``: per step of the
  chunk): ``sample_actions`` vs the ground-truth chunk, both unnormalized with the source's
  statistics, over valid steps and real dimensions. Error that grows along the chunk points at the
  horizon; one dimension far above the others at that dimension (a gripper convention, a
  normalization).
* ``action_mse_mean_baseline``: the same error for a policy that always predicts the source's mean
  action (its build statistics): the floor any ``action_mse`` must beat to have learned anything
  from the observation.
* ``fast_decode_rate`` and ``fast_action_mse``: greedy ``generate`` of the action tokens from
  where the policy generates them (``kidata.loader.collate.generation_prompt``), mapped back and decoded by the build's
  action tokenizer (the pi0-FAST path), vs ground truth.
* ``vlm_token_accuracy``: teacher-forced next-token accuracy on the VLM rows' target tokens, and
  ``vlm_exact_match``: the greedy answer equals the target answer token for token (VQA accuracy
  for short answers) — the paper's retention question; per VLM task as well
  (``vlm_exact_match/vqa``, ``/point``, ``/caption``, ``/detect``).
* ``vlm_caption_cider``: CIDEr-D (``kidata.training.cider``, coco-caption's conventions) of the
  greedy captions against each caption row's target, document frequencies over the evaluation's
  caption rows (one reference per row: a held-out sample is one caption).
* ``vlm_point_error``: on pointing rows, the distance (in image sides) from the first point the
  model generates to the target's; ``vlm_point_within_0.05``: the fraction within 5% of the image
  side; ``vlm_point_parsed``: the fraction of answers that begin with a point at all.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from kidata.loader.collate import expert_prompt, generation_prompt, prefix_only
from kidata.manifest import Manifest
from kidata.model.ki_model import KIModel
from kidata.normalize import NormStats, unnormalize
from kidata.schema import VLM_TASKS
from kidata.training.cider import cider_d

POINT_HIT_RADIUS = 0.05  # a point within 5% of the image side of the target counts as a hit


class HeldOutMetrics:
    """Accumulates metrics over batches; ``result()`` returns plain floats."""

    def __init__(self, manifest: Manifest, encoder: Any, *, num_steps: int = 10, max_new_tokens: int = 64) -> None:
        self.encoder = encoder
        self.horizon, self.action_dim = manifest.encoding.action_horizon, manifest.encoding.action_dim
        self.num_steps, self.max_new_tokens = num_steps, max_new_tokens
        self.normalization = manifest.encoding.normalization
        self.stats = {index: NormStats.from_json(s.norm_stats) for index, s in enumerate(manifest.sources)
                      if s.kind == "robot"}
        self.stop_ids = encoder.stop_ids
        self.loc_range = encoder.text.loc_range()
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.dim_sq: np.ndarray | None = None
        self.dim_n: np.ndarray | None = None
        self.step_sq = np.zeros(self.horizon)
        self.step_n = np.zeros(self.horizon)
        self.captions: list[tuple[str, str]] = []  # (generated, target) text of caption rows

    def _add(self, name: str, total: float, count: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + total
        self.counts[name] = self.counts.get(name, 0.0) + count

    def _unnormalized(self, actions: np.ndarray, source_index: int) -> np.ndarray:
        stats = self.stats[source_index].actions
        dims = len(stats.mean)
        return unnormalize(actions[..., :dims].astype(np.float64), stats, self.normalization)

    @torch.no_grad()
    def update(self, model: KIModel, batch: Mapping[str, torch.Tensor], noise: torch.Tensor | None = None) -> None:
        robot = batch["has_actions"]
        prompt = prefix_only(batch)
        if robot.any():
            self._mean_baseline(batch)
        if robot.any() and model.config.has_expert:
            predicted = model.sample_actions(expert_prompt(batch), num_steps=self.num_steps, noise=noise)
            predicted = predicted.float().cpu().numpy()
            self._action_error("action_mse", predicted, batch, np.ones(len(predicted), dtype=bool))
        if robot.any() and model.config.fast_loss:
            # from where the policy generates: after "Action: " (pi0-FAST) or the subtask (teacher-forced)
            fast_prompt = generation_prompt(batch, self.encoder.id_map.range)
            generated = model.generate(fast_prompt, self.max_new_tokens, stop_ids=self.stop_ids).cpu().numpy()
            # decoded at the build's own width (FAST was fitted there), not the model's padded one
            decoded, ok = self.encoder.decode_generated_actions(generated, horizon=self.horizon, dim=self.action_dim)
            self._add("fast_decode_rate", float(ok[robot.cpu().numpy()].sum()), float(robot.sum()))
            self._action_error("fast_action_mse", decoded, batch, ok)
        vlm = ~robot & batch["loss"].any(dim=1)
        if vlm.any():
            predicted = model(batch)["logits"].argmax(-1)  # [N]: one per loss-masked target, row-major
            loss = batch["loss"][:, 1:]
            targets, counted = batch["tokens"][:, 1:][loss], vlm[:, None].expand_as(loss)[loss]
            self._add("vlm_token_accuracy", float(((predicted == targets) & counted).sum()), float(counted.sum()))
            answers = model.generate(prompt, int(batch["loss"].sum(1).max()), stop_ids=self.stop_ids).cpu()
            tasks = batch.get("vlm_task", torch.zeros_like(robot)).cpu()
            for row in torch.nonzero(vlm).flatten().tolist():
                target = batch["tokens"][row][batch["loss"][row]].cpu()
                exact = float(torch.equal(answers[row, : len(target)], target))
                self._add("vlm_exact_match", exact, 1.0)
                task = VLM_TASKS[tasks[row] - 1] if tasks[row] > 0 else None
                if task is not None:
                    self._add(f"vlm_exact_match/{task}", exact, 1.0)
                if task == "point" and self.loc_range is not None:
                    self._point_error(answers[row].numpy(), target.numpy())
                if task == "caption":
                    self.captions.append((self._text(answers[row].tolist()), self._text(target.tolist())))

    def _text(self, ids: list[int]) -> str:
        """The words of a generated or target answer, up to its first stop token."""
        stops = set(self.stop_ids)
        end = next((i for i, token in enumerate(ids) if token in stops), len(ids))
        return self.encoder.text.decode(ids[:end])

    def _point_error(self, answer: np.ndarray, target: np.ndarray) -> None:
        """Distance, in image sides, between the first point the model names and the target's
        first point (two <loc> tokens each: y, x of 1024 bins). An answer without two <loc>
        tokens up front counts as unparsed (``vlm_point_parsed``), not as a distance."""
        first, last = self.loc_range

        def point(ids: np.ndarray) -> np.ndarray | None:
            head = ids[:2]
            if len(head) < 2 or not ((head >= first) & (head <= last)).all():
                return None
            return (head - first + 0.5) / 1024.0

        truth, guess = point(target), point(answer)
        if truth is None:
            return
        self._add("vlm_point_parsed", float(guess is not None), 1.0)
        if guess is not None:
            distance = float(np.linalg.norm(guess - truth))
            self._add("vlm_point_error", distance, 1.0)
            self._add("vlm_point_within_0.05", float(distance <= POINT_HIT_RADIUS), 1.0)

    def _mean_baseline(self, batch) -> None:
        truth = batch["actions"].float().cpu().numpy()
        valid = batch["action_valid"].cpu().numpy()
        for row in np.flatnonzero(batch["has_actions"].cpu().numpy()):
            source = int(batch["source_index"][row])
            error = (np.asarray(self.stats[source].actions.mean)[None, :] - self._unnormalized(truth[row], source)) ** 2
            error = error[valid[row]]
            self._add("action_mse_mean_baseline", float(error.sum()), float(error.size))

    def _action_error(self, name: str, predicted: np.ndarray, batch, ok: np.ndarray) -> None:
        truth = batch["actions"].float().cpu().numpy()
        valid = batch["action_valid"].cpu().numpy()
        for row in np.flatnonzero(batch["has_actions"].cpu().numpy() & ok):
            source = int(batch["source_index"][row])
            error = (self._unnormalized(predicted[row], source) - self._unnormalized(truth[row], source)) ** 2
            if name == "action_mse":
                steps = min(self.horizon, len(error))
                self.step_sq[:steps] += np.where(valid[row][:steps], error[:steps].sum(1), 0.0)
                self.step_n[:steps] += valid[row][:steps] * error.shape[1]
            error = error[valid[row]]
            self._add(name, float(error.sum()), float(error.size))
            if name == "action_mse":
                if self.dim_sq is None or len(self.dim_sq) < error.shape[1]:
                    self.dim_sq, self.dim_n = np.zeros(error.shape[1]), np.zeros(error.shape[1])
                self.dim_sq[: error.shape[1]] += error.sum(0)
                self.dim_n[: error.shape[1]] += error.shape[0]

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: self.sums[name] / max(self.counts[name], 1.0) for name in sorted(self.sums)}
        if self.dim_sq is not None:
            out["action_mse_dim"] = (self.dim_sq / np.maximum(self.dim_n, 1)).round(6).tolist()
        if self.captions:
            scores = cider_d([generated for generated, _ in self.captions], [[target] for _, target in self.captions])
            out["vlm_caption_cider"] = float(np.mean(scores))
        if self.step_n.any():
            out["action_mse_step"] = (self.step_sq / np.maximum(self.step_n, 1)).round(6).tolist()
        return out
