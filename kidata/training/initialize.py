"""Initializing a model from a kidata run: the backbone a ``vlm`` run (or any run) trained, for
``[train] init_format = "kidata"`` (the pretrained-backbone path of ``kidata compare``). Pretrained
weights from elsewhere (PaliGemma, openpi) are ``kidata.model.weights``'s."""

from __future__ import annotations

import json
from pathlib import Path

from kidata.model.ki_model import KIModel
from kidata.model.lora import is_lora_name, merge_tensors
from kidata.model.weights import WeightsError, read_tensors
from kidata.training.checkpoint import latest_checkpoint, read_weights


def load_kidata(model: KIModel, location: str | Path) -> dict:
    """The backbone (vision, projector, embedding, decoder) of a kidata run into ``model``: a run
    directory (its newest complete checkpoint, the weight EMA when kept), a checkpoint directory
    or a weights file (``kidata export weights``). The prefix state projection comes along when the
    source run trained one (its ``config.json`` says a robot variant read the state as a prefix
    token): without it the backbone it was trained with loses its state input. Everything else
    stays freshly initialized: the action expert, this model's LoRA adapters, and the projection of
    a ``vlm`` run (which never saw a state) or of a bare weights file. A LoRA run's adapters are
    merged into its base weights first (its fine-tune is what is loaded). Shapes must match tensor for tensor. Returns what was
    loaded, per part."""
    path = Path(location)
    source_run = None
    if path.is_file():
        tensors = read_tensors(path)
    else:
        if not path.is_dir():
            raise WeightsError(f"{path}: no such kidata run, checkpoint or weights file (train.init_from)")
        checkpoint = latest_checkpoint(path) if (path / "checkpoints").is_dir() else path
        if checkpoint is None:
            raise WeightsError(f"{path}: the run has no checkpoint yet (train.init_from)")
        tensors, _ = read_weights(checkpoint)
        source_run = path if (path / "checkpoints").is_dir() else path.parent.parent
    tensors = _merged_adapters(tensors, path, source_run)
    ours = model.state_dict()
    owner = {id(parameter): name for name, parameter in model.named_parameters()}
    parts = {name: {owner[id(p)] for module in modules for p in module.parameters()}
             for name, modules in model.part_modules().items()}
    backbone = set().union(*(parts[name] for name in ("vision", "projector", "embedding", "decoder")))
    backbone = {name for name in backbone if not is_lora_name(name)}  # this model's adapters start fresh
    if "state_input" in parts and source_run is not None and trained_prefix_state(source_run):
        backbone |= parts["state_input"]
    missing = sorted(backbone - set(tensors))
    if missing:
        raise WeightsError(f"{path}: lacks {len(missing)} backbone tensor(s), e.g. {missing[:4]} (not a kidata run?)")
    wrong = [f"{name} {tuple(tensors[name].shape)} vs the model's {tuple(ours[name].shape)}"
             for name in sorted(backbone) if tuple(tensors[name].shape) != tuple(ours[name].shape)]
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} backbone tensor(s) differ in shape from the model config, "
                           f"e.g. {'; '.join(wrong[:2])}: use the preset the backbone was trained with")
    model.load_state_dict({name: tensors[name].to(ours[name].dtype) for name in backbone}, strict=False)
    loaded = {name: len(names) for name, names in parts.items() if names <= backbone}
    return {"loaded": len(backbone), "loaded_parts": loaded, "dropped": len(set(tensors) - backbone),
            "embedding_rows_sliced": 0, "fresh": sorted(set(ours) - backbone)}


def trained_prefix_state(run: Path) -> bool:
    """Whether the run at ``run`` trained its prefix state projection: its model read the state as
    a prefix token under a variant that learns from robot data (``vlm`` learns from none)."""
    config = run / "config.json"
    if not config.is_file():
        return False
    model = json.loads(config.read_text()).get("model", {})
    return model.get("state_input") == "prefix" and model.get("variant") != "vlm"


def _merged_adapters(tensors: dict, path: Path, source_run: Path | None) -> dict:
    """The source's weights with its LoRA adapters (if any) folded into the base weights, scaled as
    the source run's ``config.json`` says."""
    if not any(is_lora_name(name) for name in tensors):
        return tensors
    from kidata.model.config import LoraConfig

    config = source_run / "config.json" if source_run is not None else None
    lora = json.loads(config.read_text()).get("model", {}).get("lora") if config and config.is_file() else None
    if lora is None:
        raise WeightsError(f"{path}: holds LoRA adapters but no run config.json says how they scale; pass the run "
                           "directory, or export it with kidata export weights --merge-lora")
    return merge_tensors(tensors, LoraConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in lora.items()}))
