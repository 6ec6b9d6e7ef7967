"""Model weights. Our own files (``save_weights`` / ``load_weights``: safetensors, no pickle), and
pretrained ones: Hugging Face PaliGemma checkpoints (backbone) and openpi's PyTorch pi0 /
pi0.5 checkpoints (backbone + action expert), translated tensor by tensor into ``KIModel``.

Checkpoint key layouts understood (prefixes are normalized before translation):

=====================================================  =========================================
Hugging Face hub (``google/paligemma-*``)               ``vision_tower.vision_model.*``,
                                                        ``multi_modal_projector.linear.*``,
                                                        ``language_model.model.*``
transformers 4.52-4.57 in memory / openpi            ``model.vision_tower.vision_model.*``,
                                                        ``model.multi_modal_projector.*``,
                                                        ``model.language_model.*``, ``lm_head``
transformers 5 ``save_pretrained``                      ``vision_tower.*`` (no ``vision_model``),
                                                        ``language_model.model.*``
openpi ``model.safetensors`` (JAX -> PyTorch convert)   ``paligemma_with_expert.paligemma.`` + the
                                                        line above; ``paligemma_with_expert.
                                                        gemma_expert.model.*`` (expert);
                                                        ``action_in_proj``, ``action_out_proj``,
                                                        ``time_mlp_in/out`` (pi0.5) or
                                                        ``state_proj``, ``action_time_mlp_in/out``
                                                        (pi0)
=====================================================  =========================================

Inside those prefixes (N = layer index):

=========================================================  =======================================
theirs                                                      ours
=========================================================  =======================================
vision: embeddings.patch_embedding.{weight,bias}            vision.patch.*
vision: embeddings.position_embedding.weight                vision.positions
vision: encoder.layers.N.layer_norm{1,2}.*                  vision.blocks.N.norm{1,2}.*
vision: encoder.layers.N.self_attn.{q,k,v,out}_proj.*       vision.blocks.N.{q,k,v,o}.*
vision: encoder.layers.N.mlp.fc{1,2}.*                      vision.blocks.N.fc{1,2}.*
vision: post_layernorm.*                                    vision.norm.*
projector: linear.*                                         projector.*
text: embed_tokens.weight                                   embed.weight (lm_head is tied to it)
text/expert: layers.N.self_attn.{q,k,v,o}_proj.weight       (expert_)layers.N.{q,k,v,o}.weight
text/expert: layers.N.mlp.{gate,up,down}_proj.weight        (expert_)layers.N.mlp.{gate,up,down}.weight
text/expert: layers.N.input_layernorm.weight                (expert_)layers.N.norm.weight
text/expert: layers.N.post_attention_layernorm.weight       (expert_)layers.N.mlp_norm.weight
expert (pi0.5): layers.N.*_layernorm.dense.*                expert_layers.N.{norm,mlp_norm}.modulation.*
text/expert: norm.weight / expert norm.dense.*              final_norm.weight / expert_final_norm.*
action_in_proj.* / action_out_proj.*                        action_in.* / action_out.*
=========================================================  =======================================

Dropped on purpose: the SigLIP pooling head (PaliGemma does not use it), the backbone's ``lm_head``
when ``embed_tokens`` is present (the two are tied) and the expert's unused ``lm_head``.

The tied embedding may be stored under either name. ``save_pretrained`` keeps ``embed_tokens``;
``safetensors.torch.save_model`` (how openpi writes ``model.safetensors``) keeps one name per shared
tensor, the first in sorted order, which is ``lm_head.weight``: a checkpoint without
``embed_tokens`` takes its embedding from the backbone's ``lm_head``.

Embedding rows: the hub's checkpoints hold 257216 rows (the tokenizer's 257152, ``<image>`` and
padding); that cut to 257152 is the only one made. Any other difference in rows is refused: a
shorter vocabulary would point text ids at rows trained for other tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from kidata.locate import locate
from kidata.model.config import ModelConfig
from kidata.model.ki_model import KIModel
from kidata.model.lora import is_lora_name

_PREFIXES = (  # (pattern, canonical part) tried in order; the rest of the key follows
    (r"^(?:paligemma_with_expert\.paligemma\.)?(?:model\.)?vision_tower\.(?:vision_model\.)?", "vision."),
    (r"^(?:paligemma_with_expert\.paligemma\.)?(?:model\.)?multi_modal_projector\.", "projector."),
    (r"^(?:paligemma_with_expert\.paligemma\.)?(?:model\.)?language_model\.(?:model\.)?", "text."),
    (r"^paligemma_with_expert\.gemma_expert\.model\.", "expert."),
)
_DROPPED = re.compile(r"(^|\.)lm_head\.|(vision_model|vision_tower)\.head\.")
# the backbone's output head, tied to embed_tokens (never the expert's: gemma_expert.lm_head)
_TIED_HEAD = re.compile(r"(?:paligemma_with_expert\.paligemma\.)?(?:language_model\.)?lm_head\.weight")
PALIGEMMA_VOCAB = 257152  # PaliGemma's tokenizer: Gemma's 256000 + 1024 <locNNNN> + 128 <segNNN>
HUB_EMBEDDING_ROWS = 257216  # the hub checkpoints' rows: the tokenizer's, <image>, then padding

_RULES = (  # (canonical regex, our name)
    (r"vision\.embeddings\.patch_embedding\.(weight|bias)", r"vision.patch.\1"),
    (r"vision\.embeddings\.position_embedding\.weight", "vision.positions"),
    (r"vision\.encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"vision.blocks.\1.norm\2.\3"),
    (r"vision\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"vision.blocks.\1.\2.\3"),
    (r"vision\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"vision.blocks.\1.o.\2"),
    (r"vision\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"vision.blocks.\1.\2.\3"),
    (r"vision\.post_layernorm\.(weight|bias)", r"vision.norm.\1"),
    (r"projector\.linear\.(weight|bias)", r"projector.\1"),
    (r"text\.embed_tokens\.weight", "embed.weight"),
    (r"text\.norm\.weight", "final_norm.weight"),
    (r"expert\.norm\.weight", "expert_final_norm.weight"),
    (r"expert\.norm\.dense\.(weight|bias)", r"expert_final_norm.modulation.\1"),
    (r"(text|expert)\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", r"\1.\2.\3.weight"),
    (r"(text|expert)\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"\1.\2.mlp.\3.weight"),
    (r"(text|expert)\.layers\.(\d+)\.input_layernorm\.weight", r"\1.\2.norm.weight"),
    (r"(text|expert)\.layers\.(\d+)\.post_attention_layernorm\.weight", r"\1.\2.mlp_norm.weight"),
    (r"expert\.layers\.(\d+)\.input_layernorm\.dense\.(weight|bias)", r"expert.\1.norm.modulation.\2"),
    (r"expert\.layers\.(\d+)\.post_attention_layernorm\.dense\.(weight|bias)", r"expert.\1.mlp_norm.modulation.\2"),
    (r"action_in_proj\.(weight|bias)", r"action_in.\1"),
    (r"action_out_proj\.(weight|bias)", r"action_out.\1"),
    (r"(time_mlp_in|time_mlp_out|action_time_mlp_in|action_time_mlp_out|state_proj)\.(weight|bias)", r"\1.\2"),
)
_STREAMS = {"text.": "layers.", "expert.": "expert_layers."}


class WeightsError(KeyError):
    """A checkpoint that does not fit the model it is loaded into."""


def translate(key: str) -> str | None:
    """Our parameter name for a checkpoint key, or None for keys dropped on purpose; a key that
    matches no rule raises ``WeightsError`` naming it."""
    if _DROPPED.search(key):
        return None
    canonical = key
    for pattern, part in _PREFIXES:
        canonical, count = re.subn(pattern, part, key)
        if count:
            break
    for pattern, replacement in _RULES:
        if re.fullmatch(pattern, canonical):
            ours = re.sub(pattern, replacement, canonical)
            for stream, modules in _STREAMS.items():
                if ours.startswith(stream):
                    ours = modules + ours[len(stream):]
            return ours
    raise WeightsError(f"unrecognized checkpoint key {key!r}")


def locate_checkpoint(location: str | Path) -> Path:
    """The local checkpoint directory or ``.safetensors`` file ``location`` names: a local path, an
    fsspec URL (gs://, s3://, ...; copied once into the local cache) or a Hugging Face hub id
    (``google/paligemma-3b-pt-224``; its ``*.json`` and ``*.safetensors``, the local HF cache offline)."""
    return locate(location, what="checkpoint", accept=("url", "path", "hub"), hub_files=("*.json", "*.safetensors"),
                  advice="give a directory, a .safetensors file, a URL or a hub id")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file or of a directory (single file or sharded index)."""
    from safetensors.torch import load_file

    if path.is_file():
        return load_file(str(path))
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(str(path / name)))
    return tensors


def config_from_paligemma(location: str | Path, **overrides) -> ModelConfig:
    """A ``ModelConfig`` whose backbone matches a PaliGemma checkpoint's ``config.json``. Keys the
    file leaves out take our defaults, which are PaliGemma-3B's (Gemma 2B + SigLIP So400m/14)."""
    data = json.loads((locate_checkpoint(location) / "config.json").read_text())
    vision, text = data.get("vision_config", {}), data.get("text_config", {})
    fields = {
        "image_size": vision.get("image_size"), "patch_size": vision.get("patch_size"),
        "vision_width": vision.get("hidden_size"), "vision_depth": vision.get("num_hidden_layers"),
        "vision_heads": vision.get("num_attention_heads"), "vision_mlp": vision.get("intermediate_size"),
        "vocab_size": text.get("vocab_size"), "width": text.get("hidden_size"),
        "depth": text.get("num_hidden_layers"), "heads": text.get("num_attention_heads"),
        "kv_heads": text.get("num_key_value_heads"), "head_dim": text.get("head_dim"),
        "mlp": text.get("intermediate_size"), "rope_theta": text.get("rope_theta"),
    }
    return ModelConfig(**{**{k: v for k, v in fields.items() if v is not None}, **overrides})


def load_pretrained(model: KIModel, location: str | Path, *, require_expert: bool) -> dict:
    """Copies a checkpoint's tensors into ``model`` (shapes must match; the hub's 257216-row
    embedding is cut to 257152 rows, no other). Every backbone tensor must be present; expert
    tensors too when ``require_expert``, else the expert keeps its fresh initialization, as do
    modules no checkpoint has (a prefix state projection). Returns counts of loaded and dropped
    tensors, the embedding rows cut off, and the names left fresh."""
    path = locate_checkpoint(location)
    tensors = untie_embedding(read_tensors(path / "model.safetensors" if (path / "model.safetensors").exists() else path))
    ours = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped = sliced = 0
    for key, tensor in tensors.items():
        name = translate(key)
        if name is None:
            dropped += 1
            continue
        if name not in ours and name.startswith("vision.patch.") and model.config.vision_stem:
            raise WeightsError(f"{key!r}: the checkpoint's patch embedding has no place in a model with vision_stem "
                               f"{list(model.config.vision_stem)}; set vision_stem = [] to load a pretrained tower")
        if name not in ours:
            raise WeightsError(f"{key!r} -> {name!r}: the model has no such parameter (check the model config)")
        if name == "embed.weight" and tensor.shape[0] != ours[name].shape[0]:
            tensor = _cut_hub_padding(key, tensor, ours[name].shape[0])
            sliced = HUB_EMBEDDING_ROWS - PALIGEMMA_VOCAB
        if tuple(ours[name].shape) != tuple(tensor.shape):
            raise WeightsError(f"{key!r}: shape {tuple(tensor.shape)} does not fit {name!r} {tuple(ours[name].shape)}")
        mapped[name] = tensor.to(ours[name].dtype)
    # adapters (kidata.model.lora) are no checkpoint's: they start fresh on the loaded base
    backbone = {name for name, _ in _named(model, model.backbone_parameters()) if not is_lora_name(name)}
    expert = {name for name, _ in _named(model, model.expert_parameters()) if not is_lora_name(name)}
    missing = sorted((backbone | (expert if require_expert else set())) - set(mapped))
    if missing:
        raise WeightsError(f"{path}: checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:4]}")
    model.load_state_dict(mapped, strict=False)
    return {"loaded": len(mapped), "dropped": dropped, "embedding_rows_sliced": sliced,
            "fresh": sorted(set(ours) - set(mapped))}


def untie_embedding(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with the backbone's tied ``lm_head.weight`` renamed to the ``embed_tokens``
    name it shares storage with, when the checkpoint kept only the former (a file written by
    ``safetensors.torch.save_model``, as openpi's are). With ``embed_tokens`` present the head is
    left to be dropped."""
    if any(_translates_to(key, "embed.weight") for key in tensors):
        return tensors
    heads = [key for key in tensors if _TIED_HEAD.fullmatch(key)]
    if len(heads) != 1:
        return tensors  # no embedding at all: load_pretrained names what is missing
    embed = "language_model.model.embed_tokens.weight"  # the hub's name, translated as any other
    return {(embed if key == heads[0] else key): tensor for key, tensor in tensors.items()}


def _translates_to(key: str, name: str) -> bool:
    try:
        return translate(key) == name
    except WeightsError:
        return False  # named by load_pretrained, with the rest of the checkpoint's problems


def _cut_hub_padding(key: str, tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of the hub's padded embedding; any other difference is refused."""
    if (tensor.shape[0], rows) != (HUB_EMBEDDING_ROWS, PALIGEMMA_VOCAB):
        raise WeightsError(f"{key!r} has {tensor.shape[0]} rows, the model's vocab_size is {rows}: only the hub's "
                           f"{HUB_EMBEDDING_ROWS} -> {PALIGEMMA_VOCAB} padding cut is made (any other would point "
                           "text ids at rows of other tokens); set model.vocab_size to the checkpoint's tokenizer size")
    return tensor[:rows]


def load_paligemma(model: KIModel, location: str | Path) -> dict:
    """Backbone from a PaliGemma checkpoint (directory, URL or hub id); the expert stays fresh."""
    return load_pretrained(model, location, require_expert=False)


def load_openpi(model: KIModel, location: str | Path) -> dict:
    """Backbone and expert from openpi's PyTorch pi0 (``time_conditioning='concat'``,
    ``state_input='expert'``) or pi0.5 (``time_conditioning='adarms'``) ``model.safetensors``."""
    return load_pretrained(model, location, require_expert=True)


def _named(model: torch.nn.Module, parameters) -> list[tuple[str, torch.nn.Parameter]]:
    wanted = {id(p) for p in parameters}
    return [(name, p) for name, p in model.named_parameters() if id(p) in wanted]

def save_weights(model: KIModel, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(temporary))
    temporary.replace(path)


def load_weights(model: KIModel, path: str | Path) -> KIModel:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise KeyError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters per part, counted on the meta device (no memory, any preset size)."""
    with torch.device("meta"):
        model = KIModel(config)
    counts = {name: sum(p.numel() for m in modules for p in m.parameters())
              for name, modules in model.part_modules().items()}
    counts["total"] = sum(counts.values())
    return counts
