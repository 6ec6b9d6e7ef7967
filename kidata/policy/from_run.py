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
    named = run_dir.checkpoint_named(checkpoint) if checkpoint else None
    if named is not None:
        check_same_mixture(run_dir, named, manifest)
    model = KIModel(config.model)
    path, state, _ = run_dir.weights(named, use_ema=use_ema)
    own = model.state_dict()
    shapes = [f"{name}: checkpoint {list(tensor.shape)}, model {list(own[name].shape)}"
              for name, tensor in state.items() if name in own and own[name].shape != tensor.shape]
    missing, unexpected = [n for n in own if n not in state], [n for n in state if n not in own]
    if shapes or missing or unexpected:  # load_state_dict would raise a page of size mismatches
        raise KeyError(f"{path}: weights do not fit the run's model ({'; '.join(shapes[:3]) or 'shapes agree'}; missing "
                       f"{missing[:5]}, unexpected {unexpected[:5]}): pass a checkpoint of {run_dir.path}, or the run "
                       "the checkpoint belongs to")
    model.load_state_dict(state)
    if merge_lora and config.model.lora is not None:
        from kidata.model.lora import merge

        merge(model)  # one matrix per projection at inference, as an unadapted model
    encoder = run_dir.encoder(manifest)
    return Policy(model, config, manifest, encoder, source=source, device=device, inference=inference)


def check_same_mixture(run: RunDir, checkpoint: Path, manifest) -> None:
    """Refuses a checkpoint of another run trained on another mixture: its weights would act with
    this run's normalization statistics and tokenizers, whose numbers mean something else to it
    (no shape tells them apart). A checkpoint folder outside any run is taken as given."""
    owner = RunDir.of_checkpoint(checkpoint)
    if not owner.manifest_file.is_file() or owner.path.resolve() == run.path.resolve():
        return
    theirs = owner.manifest()
    if theirs.recipe_sha256 != manifest.recipe_sha256:
        raise ValueError(f"checkpoint {checkpoint} belongs to the run {owner.path}, trained on another mixture (recipe "
                         f"sha256 {theirs.recipe_sha256[:12]}, {run.path}'s {manifest.recipe_sha256[:12]}): it would act "
                         f"with {run.path}'s normalization and tokenizers; load the run {owner.path}, or a checkpoint of "
                         f"{run.path}")
