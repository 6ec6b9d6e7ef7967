"""A trained run as a robot policy: raw observation in, unnormalized action chunk out.

    policy = kidata.policy.load("runs/libero")
    chunk = policy.sample_actions({"images": {"base_0": rgb, "left_wrist_0": wrist},   # uint8 [H, W, 3]
                                   "state": proprio,                                    # float [S]
                                   "prompt": "put the bowl on the plate"})              # -> float64 [H, A]

Everything between comes from the run: images resized with padding to the model's size, state
normalized with the source's statistics from the manifest, the prompt encoded exactly as in the
build, actions sampled (flow expert; or greedy FAST tokens for ``pi0_fast``) and unnormalized.
A source built with subtask annotations is acted on as pi0.5 does: the model first generates
"Subtask: ...;\\nAction: ", then acts with that text in its context, as its training rows had it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kidata.delta import to_absolute
from kidata.loader.collate import collate
from kidata.manifest import Manifest
from kidata.model.ki_model import KIModel
from kidata.normalize import NormStats, normalize, unnormalize
from kidata.tokenizers.prompt import SampleEncoder
from kidata.training.checkpoint import latest_checkpoint, read_weights
from kidata.training.config import ACTION_HEADS, FAST_FALLBACKS, TrainConfig


class ObservationError(ValueError):
    """An observation the policy would misread; names the key and what is expected."""


class Policy:
    """``num_steps``: flow integration steps of ``sample_actions`` unless a call names its own.
    ``action_head``: where actions come from: ``flow`` (the expert), ``fast`` (greedy FAST tokens
    from the backbone, decoded; a ``ki`` model trains both), ``auto`` (the expert when there is one).
    ``noise_scale`` scales the flow's starting noise (0: one deterministic chunk from the prior's
    mean); ``flow_samples`` > 1 returns the mean of that many chunks, sampled as one batch.
    ``fast_fallback``: ``relaxed`` or ``flow`` for FAST tokens that do not decode exactly
    (``PolicyConfig``). ``counters`` counts FAST chunks, the invalid ones and the expert's stand-ins:
    the evaluators report them per task. ``subtask``: generate the subtask before acting (default:
    when the source's recipe entry names ``annotations``, i.e. its rows were built with subtasks);
    ``last_subtask`` holds the latest generated one."""

    def __init__(self, model: KIModel, config: TrainConfig, manifest: Manifest, encoder: Any, *,
                 source: str | None = None, device: str | torch.device = "cpu", num_steps: int = 10,
                 action_head: str = "auto", noise_scale: float = 1.0, flow_samples: int = 1,
                 fast_fallback: str = "relaxed", subtask: bool | None = None) -> None:
        self.model, self.config, self.manifest, self.encoder = model.eval(), config, manifest, encoder
        self.device = torch.device(device)
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
        self.num_steps = num_steps
        if not noise_scale >= 0 or flow_samples < 1:
            raise ValueError(f"noise_scale must be >= 0 (got {noise_scale}) and flow_samples >= 1 (got {flow_samples})")
        self.noise_scale, self.flow_samples = float(noise_scale), int(flow_samples)
        if action_head not in ACTION_HEADS:
            raise ValueError(f"action_head {action_head!r}: choose one of {ACTION_HEADS}")
        if action_head == "flow" and not model.config.has_expert:
            raise ValueError(f"action_head 'flow': the {model.config.variant} model has no action expert")
        if action_head == "fast" and not model.config.fast_loss:
            raise ValueError(f"action_head 'fast': the {model.config.variant} model trains no action tokens")
        self.action_head = ("flow" if model.config.has_expert else "fast") if action_head == "auto" else action_head
        if fast_fallback not in FAST_FALLBACKS:
            raise ValueError(f"fast_fallback {fast_fallback!r}: choose one of {FAST_FALLBACKS}")
        if fast_fallback == "flow" and not model.config.has_expert:
            raise ValueError(f"fast_fallback 'flow': the {model.config.variant} model has no action expert")
        self.fast_fallback = fast_fallback
        self.counters = {"fast_chunks": 0, "fast_invalid": 0, "flow_fallbacks": 0}
        if subtask is None:
            entry = next((s for s in manifest.recipe.get("sources", []) if s.get("name") == self.source), {})
            subtask = bool(entry.get("annotations"))
        self.generates_subtask = bool(subtask)
        self.last_subtask: str | None = None

    @property
    def action_dim(self) -> int:
        return len(self.stats.actions.mean)

    def check(self, observation: Mapping[str, Any]) -> None:
        """Refuses an observation the model would silently misread (``ObservationError`` naming
        the key, what was given and what is expected): images must be uint8 [H, W, 3] RGB for
        each of the run's cameras (None for a camera this robot lacks), the state a finite
        float vector of the source's width, the prompt a non-empty string."""
        for key in ("images", "state", "prompt"):
            if key not in observation:
                raise ObservationError(f"observation lacks {key!r} (keys: {sorted(observation)})")
        if not isinstance(observation["prompt"], str) or not observation["prompt"].strip():
            raise ObservationError(f"prompt must be a non-empty string, got {observation['prompt']!r}")
        images = observation["images"]
        cameras = tuple(self.config.data.cameras)
        unknown = sorted(set(images) - set(cameras))
        missing = [camera for camera in cameras if camera not in images]
        if unknown or missing:
            raise ObservationError(f"images: the run's cameras are {list(cameras)}; unknown {unknown}, missing "
                                   f"{missing} (pass None for a camera this robot does not have)")
        if all(image is None for image in images.values()):
            raise ObservationError("images: every camera is None; the policy needs at least one image")
        for camera, image in images.items():
            if image is None:
                continue
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise ObservationError(f"images[{camera!r}] is {array.dtype}; expected uint8 RGB in [0, 255] "
                                       "(a float image in [0, 1]: multiply by 255 and cast)")
            if array.ndim != 3 or array.shape[2] != 3:
                hint = " (channel-first? transpose to [H, W, 3])" if array.ndim == 3 and array.shape[0] == 3 else ""
                raise ObservationError(f"images[{camera!r}] has shape {array.shape}; expected [H, W, 3] RGB{hint}")
        state = np.asarray(observation["state"])
        width = len(self.stats.state.mean)
        if state.shape != (width,):
            raise ObservationError(f"state has shape {state.shape}; source {self.source!r} has state [{width}]")
        if not np.issubdtype(state.dtype, np.number) or not np.isfinite(state.astype(np.float64)).all():
            raise ObservationError(f"state must be finite numbers, got {state.tolist()}")

    def batch(self, observation: Mapping[str, Any], *, subtask: str | None = None) -> dict[str, torch.Tensor]:
        """The model input for an observation. A policy that generates subtasks gets the subtask
        row's prompt: without ``subtask`` the one it generates from, with it the one it acts from."""
        from kidata.images import resize_with_pad

        self.check(observation)
        size = self.config.model.image_size
        images = {camera: resize_with_pad(np.asarray(image, dtype=np.uint8), size)
                  for camera, image in observation["images"].items() if image is not None}
        state = normalize(np.asarray(observation["state"], dtype=np.float64), self.stats.state, self.normalization)
        if self.generates_subtask:
            sample = self.encoder.subtask_prompt(observation["prompt"], state, subtask=subtask, images=images)
        else:
            sample = self.encoder.robot_prompt(observation["prompt"], state, images=images)
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
        actions gets the observation's state added back on those dimensions)."""
        if self.generates_subtask:
            self.last_subtask = self.generate_subtask(observation)
            batch = self.batch(observation, subtask=self.last_subtask)
        else:
            batch = self.batch(observation)
        steps = num_steps if num_steps is not None else self.num_steps
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
        generated = self.model.generate(batch, max(budget, 1), stop_ids=stops)[0].cpu().numpy()
        return self.encoder.subtask_of(generated)

    def _flow_actions(self, batch: dict, steps: int, noise: torch.Tensor | None) -> np.ndarray:
        if noise is None and (self.noise_scale != 1.0 or self.flow_samples > 1):
            # the flow's samples spread around its mean (a trained Meta-World expert: about 40% of
            # its held-out error, RESULTS.md): a colder start or the mean of several samples
            batch = {key: value.repeat(self.flow_samples, *([1] * (value.dim() - 1))) for key, value in batch.items()}
            shape = (self.flow_samples, self.model.config.action_horizon, self.model.config.action_dim)
            noise = torch.randn(shape, device=self.device) * self.noise_scale
            chunks = self.model.sample_actions(batch, num_steps=steps, noise=noise)
            return chunks.float().mean(0).cpu().numpy()
        return self.model.sample_actions(batch, num_steps=steps, noise=noise)[0].float().cpu().numpy()

    def _fast_actions(self, batch: dict) -> tuple[np.ndarray, bool]:
        budget = self.manifest.encoding.max_tokens
        generated = self.model.generate(batch, budget, stop_ids=self.encoder.stop_ids).cpu().numpy()
        decoded, ok = self.encoder.decode_generated_actions(generated, horizon=self.action_horizon,
                                                            dim=self.manifest.encoding.action_dim)
        return decoded[0], bool(ok[0])


def load(run: str | Path, *, checkpoint: str | Path | None = None, source: str | None = None, use_ema: bool = True,
         device: str | torch.device = "cpu", action_head: str | None = None, num_steps: int = 10,
         noise_scale: float = 1.0, flow_samples: int = 1, fast_fallback: str | None = None,
         subtask: bool | None = None, merge_lora: bool = True) -> Policy:
    """The policy of a run directory (latest checkpoint unless ``checkpoint`` names one; its weight
    EMA when the run kept one and ``use_ema``; the run's ``[policy] action_head`` unless
    ``action_head`` names one; likewise ``fast_fallback``; ``subtask`` as in ``Policy``). A LoRA
    run's adapters are merged into the base weights unless ``merge_lora`` is false."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a kidata run (no config.json); pass the --out folder of `kidata train`")
    config = TrainConfig.from_mapping(json.loads((run / "config.json").read_text()), origin=str(run / "config.json"))
    manifest, _ = Manifest.read(str(run / "manifest.json"))
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run)
    if path is None:
        raise FileNotFoundError(f"{run} has no checkpoint yet")
    model = KIModel(config.model)
    state, _ = read_weights(path, use_ema=use_ema)  # whole files, or an FSDP2 run's shards gathered here
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{path}: weights do not fit the run's model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if merge_lora and config.model.lora is not None:
        from kidata.model.lora import merge

        merge(model)  # one matrix per projection at inference, as an unadapted model
    encoder = SampleEncoder.from_manifest(manifest, run / "fast_tokenizer")
    return Policy(model.to(device), config, manifest, encoder, source=source, device=device, num_steps=num_steps,
                  noise_scale=noise_scale, flow_samples=flow_samples,
                  action_head=config.policy.action_head if action_head is None else action_head,
                  fast_fallback=config.policy.fast_fallback if fast_fallback is None else fast_fallback,
                  subtask=subtask)
