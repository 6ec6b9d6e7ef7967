"""Whether a built mixture fits a model config: checked before a run starts, so a mismatch is one
sentence naming every difference instead of a shape error at the first batch."""

from __future__ import annotations

from kidata.manifest import Manifest, ManifestMismatch
from kidata.training.config import TrainConfig


def check_compatible(manifest: Manifest, config: TrainConfig) -> None:
    """Refuses a mixture whose encoding does not fit the model, naming every difference."""
    model, encoding = config.model, manifest.encoding
    problems = []
    weights = config.data.weights
    robot = [s.name for s in manifest.sources if s.kind == "robot" and (weights.get(s.name, 0.0) if weights else s.weight)]
    if model.variant == "vlm" and robot:
        problems.append(f"variant vlm trains the backbone on VLM data alone, the mixture samples robot sources {robot} "
                        "(weigh them 0 with data.weights, train them with pi0_fast, or build the VLM sources alone)")
    if encoding.action_horizon != model.action_horizon:
        problems.append(f"action_horizon: data {encoding.action_horizon}, model {model.action_horizon}")
    if encoding.action_dim > model.action_dim:
        problems.append(f"action_dim: data {encoding.action_dim} > model {model.action_dim}")
    if encoding.image_size != model.image_size:
        problems.append(f"image_size: data {encoding.image_size}, model {model.image_size}")
    if encoding.token_vocab_size > model.vocab_size:
        problems.append(f"token vocabulary: data {encoding.token_vocab_size} (text {encoding.text_vocab_size}, action ids "
                        f"{list(encoding.fast_token_range)}) > model vocab_size {model.vocab_size} (train with "
                        f"--model.vocab_size {encoding.token_vocab_size})")
    kind = manifest.action_tokens
    if kind != model.action_tokens:
        problems.append(f"action tokens: data {kind!r}, model action_tokens {model.action_tokens!r}")
    continuous = encoding.state_encoding == "continuous"
    if continuous != (model.state_input in ("prefix", "expert")):
        problems.append(f"state: data state_encoding {encoding.state_encoding!r}, model state_input {model.state_input!r}")
    if encoding.prompt_format == "pi0" and model.state_input != "expert":
        problems.append(f"prompt layout: data prompt_format 'pi0' (openpi's pi0: state in the action expert), model "
                        f"state_input {model.state_input!r} (set --model.state_input expert)")
    widest_state = max((len(s.norm_stats["state"]["mean"]) for s in manifest.sources if s.kind == "robot"), default=0)
    if continuous and widest_state > model.state_dim:
        problems.append(f"state_dim: data {widest_state} > model {model.state_dim}")
    if encoding.action_horizon != model.action_horizon or encoding.image_size != model.image_size:
        problems.append(f"a mixture is built for one model shape: rebuild its recipe with [mixture] action_horizon = "
                        f"{model.action_horizon} and image_size = {model.image_size} (what this model reads; a pretrained "
                        f"init_from also needs its text_tokenizer), or train with --model.action_horizon "
                        f"{encoding.action_horizon} --model.image_size {encoding.image_size}")
    if problems:
        raise ManifestMismatch("the mixture does not fit the model config: " + "; ".join(problems))
