"""The pure policy: a model, its run's config and manifest and an encoder in; raw observation in,
unnormalized action chunk out. It reads no file (``kidata.policy.from_run.load`` does).

Everything between comes from the run: images resized with padding to the model's size, state
normalized with the source's statistics from the manifest, the prompt encoded exactly as in the
build, actions sampled (flow expert; or greedy FAST tokens for ``pi0_fast``) and unnormalized.
A source built with subtask annotations is acted on as pi0.5 does: the model first generates
"Subtask: ...;\\nAction: ", then acts with that text in its context, as its training rows had it.
Every caller input is checked as data first (``kidata.observation``). The model runs on
``device`` (default: CUDA when present) in ``Inference.precision`` ``float32`` or ``bfloat16``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from kidata.delta import to_absolute
from kidata.loader.collate import collate
from kidata.manifest import Manifest
from kidata.model.ki_model import KIModel
from kidata.normalize import NormStats, normalize, unnormalize
from kidata.observation import ObservationError, check_noise, check_num_steps, check_observation
from kidata.policy.inference import PRECISIONS, Inference, resolve_device
from kidata.tokenizers.prompt import SampleRejected
from kidata.training.config import PolicyConfig, TrainConfig


class Policy:
    """A model acting for one robot source of its run. ``config``: the run's ``TrainConfig``, whose
    ``[policy]`` table (``settings``: action head, replan, FAST fallback, temporal ensemble) was
    validated with it against the model; the evaluators and the server read it from here.
    ``action_head`` is the head that acts: ``flow`` (the expert) or ``fast`` (greedy FAST tokens
    from the backbone, decoded), ``auto`` resolved to the expert when there is one. FAST tokens that
    do not decode exactly are handled as ``settings.fast_fallback`` says; ``counters`` counts FAST
    chunks, the invalid ones and the expert's stand-ins (the evaluators report them per task).
    ``inference``: how to sample (``Inference``: flow steps, noise, precision, subtask generation);
    ``last_subtask`` holds the latest generated subtask. ``source``: the robot source whose
    statistics apply (default: the first). ``device``: where the model and every input go (the
    model is moved there; default: CUDA when present)."""

    def __init__(self, model: KIModel, config: TrainConfig, manifest: Manifest, encoder: Any, *,
                 source: str | None = None, device: str | torch.device | None = None,
                 inference: Inference = Inference()) -> None:
        self.inference = inference
        self.device = resolve_device(device)
        self.model, self.config, self.manifest, self.encoder = model.to(self.device).eval(), config, manifest, encoder
        robots = [s for s in manifest.sources if s.kind == "robot"]
        if not robots:
            raise ValueError("the run's mixture has no robot source: nothing to unnormalize actions with")
        chosen = next((s for s in robots if s.name == source), None) if source else robots[0]
        if chosen is None:
            raise KeyError(f"no robot source {source!r} in the run (sources: {[s.name for s in robots]})")
        self.source = chosen.name
        self.source_index = manifest.sources.index(chosen)
        self.stats = NormStats.from_json(chosen.norm_stats)
        # the run learned these action dimensions relative to the state: added back in robot units
        self.delta_mask = np.asarray(chosen.delta_mask, dtype=bool) if chosen.delta_mask is not None else None
        self.normalization = manifest.encoding.normalization
        self.action_horizon = manifest.encoding.action_horizon
        self.num_steps = inference.num_steps
        head = self.settings.action_head
        self.action_head = ("flow" if config.model.has_expert else "fast") if head == "auto" else head
        self.counters = {"fast_chunks": 0, "fast_invalid": 0, "flow_fallbacks": 0}
        subtask = inference.subtask
        if subtask is None:
            entry = next((s for s in manifest.recipe.get("sources", []) if s.get("name") == self.source), {})
            subtask = bool(entry.get("annotations"))
        self.generates_subtask = bool(subtask)
        self.last_subtask: str | None = None

    @property
    def settings(self) -> PolicyConfig:
        """The run's ``[policy]`` table, as the caller overrode it (``load``'s ``action_head``, ...)."""
        return self.config.policy

    @property
    def fast_fallback(self) -> str:
        return self.settings.fast_fallback

    @property
    def precision(self) -> str:
        return self.inference.precision

    @property
    def noise_scale(self) -> float:
        return self.inference.noise_scale

    @property
    def flow_samples(self) -> int:
        return self.inference.flow_samples

    @property
    def action_dim(self) -> int:
        return len(self.stats.actions.mean)

    @property
    def num_steps(self) -> int:
        """Flow integration steps of ``sample_actions`` (1 to ``MAX_NUM_STEPS``)."""
        return self._num_steps

    @num_steps.setter
    def num_steps(self, value: int) -> None:
        self._num_steps = check_num_steps(value)

    def check(self, observation: Mapping[str, Any]) -> None:
        """Refuses an observation the model would silently misread (``ObservationError`` naming
        the key, what was given and what is expected): images must be uint8 [H, W, 3] RGB for
        each of the run's cameras (None for a camera this robot lacks), the state a finite
        real vector of the source's width, the prompt non-empty Unicode text
        (``kidata.observation.check_observation``)."""
        check_observation(observation, cameras=tuple(self.config.data.cameras), state_width=len(self.stats.state.mean),
                          source=self.source)

    def batch(self, observation: Mapping[str, Any], *, subtask: str | None = None) -> dict[str, torch.Tensor]:
        """The model input for an observation. A policy that generates subtasks gets the subtask
        row's prompt: without ``subtask`` the one it generates from, with it the one it acts from."""
        from kidata.images import resize_with_pad

        self.check(observation)
        size = self.config.model.image_size
        images = {camera: resize_with_pad(np.asarray(image, dtype=np.uint8), size)
                  for camera, image in observation["images"].items() if image is not None}
        state = normalize(np.asarray(observation["state"], dtype=np.float64), self.stats.state, self.normalization)
        try:
            if self.generates_subtask:
                sample = self.encoder.subtask_prompt(observation["prompt"], state, subtask=subtask, images=images)
            else:
                sample = self.encoder.robot_prompt(observation["prompt"], state, images=images)
        except SampleRejected as error:  # a prompt longer than the run's max_tokens
            raise ObservationError(f"prompt: {error}; shorten the instruction") from None
        meta = {"prefix_length": sample.prefix_length,
                **{k: v for k, v in sample.meta.items() if k == "expert_context"}}
        record = {"tokens": sample.tokens, "ar": sample.ar, "loss": sample.loss, "images": sample.images,
                  "state": sample.state, "meta": meta, "source_index": self.source_index}
        batch = collate([record], max_tokens=len(sample.tokens), action_dim=self.config.model.action_dim,
                        action_horizon=self.config.model.action_horizon, state_dim=self.config.model.state_dim,
                        cameras=self.config.data.cameras, image_size=size)
        return {key: value.to(self.device) for key, value in batch.items()}

    @torch.no_grad()
    def sample_actions(self, observation: Mapping[str, Any], *, num_steps: int | None = None,
                       noise: torch.Tensor | None = None) -> np.ndarray:
        """float64 [action_horizon, action_dim] in the robot's own units (a run trained on delta
        actions gets the observation's state added back on those dimensions). ``noise``: the
        flow's starting noise, float [1, H, A] or [H, A] on any device and in any float dtype
        (moved to the model's device as float32; the model's own chunk shape, ``model.config``)."""
        steps = self.num_steps if num_steps is None else check_num_steps(num_steps)
        if self.generates_subtask:
            self.last_subtask = self.generate_subtask(observation)
            batch = self.batch(observation, subtask=self.last_subtask)
        else:
            batch = self.batch(observation)
        if noise is not None:
            noise = check_noise(noise, self.model.config.action_horizon, self.model.config.action_dim).to(self.device)
        with self._precision():
            normalized = self._normalized_actions(batch, steps, noise)
        actions = unnormalize(normalized[: self.action_horizon, : self.action_dim], self.stats.actions, self.normalization)
        if self.delta_mask is not None:
            actions = to_absolute(actions, np.asarray(observation["state"], dtype=np.float64), self.delta_mask)
        return actions

    @torch.no_grad()
    def generate_subtask(self, observation: Mapping[str, Any]) -> str:
        """The subtask the model names for an observation: greedy "Subtask: ...;\\nAction: " from
        the subtask row's prefix, stopped at its first action token (or EOS, "|")."""
        batch = self.batch(observation)
        action_ids = self.encoder.id_map.range
        stops = (*self.encoder.stop_ids, *range(action_ids.first, action_ids.last + 1))
        budget = self.manifest.encoding.max_tokens - int(batch["token_mask"][0].sum())
        with self._precision():
            generated = self.model.generate(batch, max(budget, 1), stop_ids=stops)[0].cpu().numpy()
        return self.encoder.subtask_of(generated)

    def _precision(self):
        import contextlib

        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def _normalized_actions(self, batch: dict, steps: int, noise: torch.Tensor | None) -> np.ndarray:
        """float [>= action_horizon, >= action_dim]: the model's chunk, before unnormalizing."""
        if self.action_head == "flow":
            normalized = self._flow_actions(batch, steps, noise)
        else:
            normalized, ok = self._fast_actions(batch)
            self.counters["fast_chunks"] += 1
            if not ok:
                self.counters["fast_invalid"] += 1
                if self.fast_fallback == "flow":
                    self.counters["flow_fallbacks"] += 1
                    normalized = self._flow_actions(batch, steps, noise)
        return normalized

    def _flow_actions(self, batch: dict, steps: int, noise: torch.Tensor | None) -> np.ndarray:
        if noise is None and (self.noise_scale != 1.0 or self.flow_samples > 1):
            # the flow's samples spread around its mean (a trained Meta-World expert: about 40% of
            # its held-out error, docs/results/metaworld.md): a colder start or the mean of several samples
            batch = {key: value.repeat(self.flow_samples, *([1] * (value.dim() - 1))) for key, value in batch.items()}
            shape = (self.flow_samples, self.model.config.action_horizon, self.model.config.action_dim)
            noise = torch.randn(shape, device=self.device) * self.noise_scale
            chunks = self.model.sample_actions(batch, num_steps=steps, noise=noise)
            return chunks.float().mean(0).cpu().numpy()
        return self.model.sample_actions(batch, num_steps=steps, noise=noise)[0].float().cpu().numpy()

    def _fast_actions(self, batch: dict) -> tuple[np.ndarray, bool]:
        # a training sample holds prompt + action tokens within max_tokens: what is left after the prompt
        prompt_length = int(batch["token_mask"].sum(dim=1).max())
        budget = self.manifest.encoding.max_tokens - prompt_length
        if budget < 1:
            raise ObservationError(f"prompt: {prompt_length} tokens leave no room for action tokens within the run's "
                                   f"max_tokens {self.manifest.encoding.max_tokens}; shorten the prompt")
        generated = self.model.generate(batch, budget, stop_ids=self.encoder.stop_ids).cpu().numpy()
        decoded, ok = self.encoder.decode_generated_actions(generated, horizon=self.action_horizon,
                                                            dim=self.manifest.encoding.action_dim)
        return decoded[0], bool(ok[0])

