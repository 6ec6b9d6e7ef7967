"""The factory that reads a run directory (``kidata train``'s ``--out``) into a ``Policy``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kidata.model.ki_model import KIModel
from kidata.policy.inference import Inference, resolve_device
from kidata.policy.robot_policy import Policy
from kidata.training.run_dir import RunDir


def load(run: str | Path, *, checkpoint: str | Path | None = None, source: str | None = None, use_ema: bool = True,
         device: str | torch.device | None = None, precision: str = "float32", action_head: str | None = None,
         num_steps: int = 10, noise_scale: float = 1.0, flow_samples: int = 1,
         fast_fallback: str | None = None, subtask: bool | None = None, merge_lora: bool = True) -> Policy:
    """The policy of a run directory (latest complete checkpoint unless ``checkpoint`` names one,
    verified against its checksums either way; its weight EMA when the run kept one and
    ``use_ema``; the run's ``[policy] action_head`` unless ``action_head`` names one; likewise
    ``fast_fallback``; ``subtask`` as in ``Inference``), on ``device`` (default: CUDA when present)
    in ``precision``. A LoRA run's adapters are merged into the base weights unless ``merge_lora``
    is false. Every argument is checked before a weight is read."""
    run_dir = RunDir(run).require_run()
    inference = Inference(num_steps=num_steps, noise_scale=noise_scale, flow_samples=flow_samples,
                          precision=precision, subtask=subtask)
    resolve_device(device)
    config, manifest = run_dir.config(), run_dir.manifest()
    overrides = {key: value for key, value in (("action_head", action_head), ("fast_fallback", fast_fallback))
                 if value is not None}
    if overrides:  # validated as the run's own [policy] was, against its model
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **overrides))
    model = KIModel(config.model)
    path, state, _ = run_dir.weights(Path(checkpoint) if checkpoint else None, use_ema=use_ema)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{path}: weights do not fit the run's model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if merge_lora and config.model.lora is not None:
        from kidata.model.lora import merge

        merge(model)  # one matrix per projection at inference, as an unadapted model
    encoder = run_dir.encoder(manifest)
    return Policy(model, config, manifest, encoder, source=source, device=device, inference=inference)
