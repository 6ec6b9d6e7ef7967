"""Initializing a model from a kidata run: the backbone a ``vlm`` run (or any run) trained, for
``[train] init_format = "kidata"`` (the pretrained-backbone path of ``kidata compare``). Pretrained
weights from elsewhere (PaliGemma, openpi) are ``kidata.model.weights``'s; whether the mixture's
text tokenizer is the one they were trained with is checked here, before a run starts."""

from __future__ import annotations

from pathlib import Path

import torch

from kidata.manifest import Manifest, ManifestMismatch
from kidata.model.ki_model import KIModel
from kidata.model.lora import is_lora_name, merge_tensors, store_frozen_in_bf16, train_fresh
from kidata.model.weights import WeightsError, read_tensors
from kidata.training.config import TrainConfig
from kidata.training.run_dir import RunDir


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
        given = RunDir(path)
        source_run = given if given.checkpoints_dir.is_dir() else RunDir.of_checkpoint(path)
        checkpoint = given.latest_checkpoint() if source_run is given else path
        if checkpoint is None:
            raise WeightsError(f"{path}: the run has no checkpoint yet (train.init_from)")
        _, tensors, _ = source_run.weights(checkpoint)  # verified against its checksums, as the policy's
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


def trained_prefix_state(run: RunDir) -> bool:
    """Whether the run at ``run`` trained its prefix state projection: its model read the state as
    a prefix token under a variant that learns from robot data (``vlm`` learns from none)."""
    if not run.is_run():
        return False
    model = run.config().model
    return model.state_input == "prefix" and model.variant != "vlm"


def _merged_adapters(tensors: dict, path: Path, source_run: RunDir | None) -> dict:
    """The source's weights with its LoRA adapters (if any) folded into the base weights, scaled as
    the source run's ``config.json`` says."""
    if not any(is_lora_name(name) for name in tensors):
        return tensors
    lora = source_run.config().model.lora if source_run is not None and source_run.is_run() else None
    if lora is None:
        raise WeightsError(f"{path}: holds LoRA adapters but no run config.json says how they scale; pass the run "
                           "directory, or export it with kidata export weights --merge-lora")
    return merge_tensors(tensors, lora)


PRETRAINED_FORMATS = ("paligemma", "openpi")  # checkpoints whose embedding rows are PaliGemma's token ids


def check_init_tokenizer(manifest: Manifest, config: TrainConfig) -> None:
    """Refuses ``init_from`` a PaliGemma or openpi checkpoint on a mixture built with another text
    tokenizer: each of the checkpoint's embedding rows belongs to one PaliGemma token id, so any
    other tokenizer trains every text id against an unrelated row. The vocabulary size recorded in
    the manifest is compared first, then the tokenizer the build used (same sha256) is
    fingerprinted (``paligemma_mismatch``)."""
    from kidata.tokenizers import text

    train = config.train
    if not train.init_from or train.init_format not in PRETRAINED_FORMATS:
        return
    name = manifest.recipe.mixture.text_tokenizer
    problem = None
    if manifest.encoding.text_vocab_size != text.PALIGEMMA_VOCAB_SIZE:
        problem = f"{manifest.encoding.text_vocab_size} ids, PaliGemma's has {text.PALIGEMMA_VOCAB_SIZE}"
    else:
        tokenizer = text.TextTokenizer.load(name)
        if tokenizer.sha256 != manifest.text_tokenizer.sha256:
            raise ManifestMismatch(f"text tokenizer {tokenizer.source} has sha256 {tokenizer.sha256[:12]}, the build "
                                   f"used {manifest.text_tokenizer.sha256[:12]}: point the mixture's tokenizer at "
                                   "the files the build used")
        problem = text.paligemma_mismatch(tokenizer)
    if problem:
        raise ManifestMismatch(
            f"train.init_from {train.init_from!r} (init_format {train.init_format!r}) holds PaliGemma's token "
            f"embedding, the mixture {config.data.manifest} was built with text tokenizer {name!r} ({problem}): "
            "rebuild the mixture with text_tokenizer = \"google/paligemma-3b-pt-224\", or train without init_from")


def initialized_model(config: TrainConfig) -> KIModel:
    """The whole model on CPU as training starts: seeded with ``train.seed``, then loaded from
    ``train.init_from`` (reported on stdout) when set."""
    torch.manual_seed(config.train.seed)
    model = KIModel(config.model)
    if config.train.init_from:
        from kidata.model.weights import load_openpi, load_paligemma

        loaders = {"paligemma": load_paligemma, "openpi": load_openpi, "kidata": load_kidata}
        report = loaders[config.train.init_format](model, config.train.init_from)
        fresh, cut = sorted({name.split(".")[0] for name in report["fresh"]}), report["embedding_rows_sliced"]
        print(f"initialized from {config.train.init_from}: {report['loaded']} tensors loaded"
              + (f", {cut} embedding rows past the vocabulary cut" if cut else "")
              + (f"; fresh: {', '.join(fresh)}" if fresh else ""), flush=True)
        if config.model.lora is not None:  # adapters adapt what was loaded; the rest trains whole
            print(train_fresh(model, report["fresh"]), flush=True)
    if config.train.frozen_weights == "bf16":
        store_frozen_in_bf16(model)
    model.activation_checkpointing = config.train.activation_checkpointing
    return model



def build_sharded(config: TrainConfig, device: torch.device, world: int, *,
                  bf16: bool) -> tuple[KIModel, torch.nn.Module]:
    """The model under FSDP2 without a whole copy on every rank: each rank builds it on the
    ``meta`` device (no memory), shards it, and allocates its own shards only; rank 0 alone builds
    the initialized model on CPU (``initialized_model``: the same seed and ``init_from`` as one
    process, so any world size starts from the same weights) and scatters it, tensor by tensor,
    into the shards (``set_model_state_dict`` with ``broadcast_from_rank0``, PyTorch's recipe for
    large models). Call on every rank of the process group.

    Every rank takes rank 0's set of trained parameters (under LoRA it depends on what
    ``init_from`` filled: ``train_fresh``). FSDP2 reduce-scatters, per unit, only the parameters
    that hold a gradient, so ranks that disagree on one unit's trained set send buffers of
    different sizes (gloo: "Received data size doesn't match expected size"); frozen and trained
    parameters may share a unit as long as every rank freezes the same ones."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from kidata.training.parallelize import parallelize

    initialized = initialized_model(config) if dist.get_rank() == 0 else None
    whole = initialized.state_dict() if initialized is not None else {}
    trained = [{n for n, p in initialized.named_parameters() if p.requires_grad} if initialized is not None else None]
    dist.broadcast_object_list(trained, src=0)  # what trains depends on what init_from filled (LoRA)
    with torch.device("meta"):
        model = KIModel(config.model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trained[0])
    if config.train.frozen_weights == "bf16":  # as rank 0's initialized model, before the units are cut
        store_frozen_in_bf16(model)
    model.activation_checkpointing = config.train.activation_checkpointing
    wrapped = parallelize(model, config, world, bf16=bf16)
    model.to_empty(device=device)
    set_model_state_dict(model, whole, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    generator = [torch.get_rng_state()]  # every rank leaves with rank 0's RNG, as if each had built the model
    dist.broadcast_object_list(generator, src=0)
    torch.set_rng_state(generator[0])
    return model, wrapped
