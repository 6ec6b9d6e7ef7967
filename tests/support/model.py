"""The tiny KI model and hand-made batches for it; a tiny PaliGemma and openpi checkpoints to load from."""

from __future__ import annotations

import torch

from kidata import assets
from kidata.model.config import ModelConfig
from kidata.model.ki_model import KIModel

TINY = assets.ROOT / "model" / "ki_tiny.toml"


def make_batch(seed: int = 0, batch: int = 2, length: int = 12, prefix: int = 6) -> dict:
    """A random batch in the model's keys: two 32x32 cameras (the second missing in row 1), ``length`` tokens
    of which the first ``prefix`` are the prompt and the last two of row 1 padding, 4 x 8 actions, 8-d state."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 2000, (batch, length), generator=g)
    ar = torch.zeros(batch, length, dtype=torch.bool)
    ar[:, prefix:] = True
    token_mask = torch.ones(batch, length, dtype=torch.bool)
    token_mask[1, -2:] = False  # padding
    return {
        "images": torch.rand(batch, 2, 3, 32, 32, generator=g) * 2 - 1,
        "image_mask": torch.tensor([[True, True], [True, False]]),
        "tokens": tokens, "ar": ar & token_mask, "loss": ar & token_mask, "token_mask": token_mask,
        "actions": torch.randn(batch, 4, 8, generator=g), "action_valid": torch.ones(batch, 4, dtype=torch.bool),
        "action_dim_mask": torch.ones(batch, 8, dtype=torch.bool), "has_actions": torch.ones(batch, dtype=torch.bool),
        "state": torch.randn(batch, 8, generator=g), "state_dim_mask": torch.ones(batch, 8, dtype=torch.bool),
    }


def model(variant: str = "ki", seed: int = 0, **overrides) -> KIModel:
    """The tiny preset at make_batch's sizes, seeded, with its zero-initialized gates opened."""
    torch.manual_seed(seed)
    shape = {"image_size": 32, "patch_size": 8, "action_horizon": 4}  # make_batch's sizes
    net = KIModel(ModelConfig.load(TINY, variant=variant, **{**shape, **overrides}))
    for parameter in net.parameters():  # open the zero-initialized gates so every path carries signal
        if parameter.dim() >= 1 and parameter.abs().sum() == 0:
            torch.nn.init.normal_(parameter, std=0.05)
    return net


def fixed(batch: dict) -> dict:
    """Flow-matching noise and times fixed for ``batch`` (two rows), so two forward passes can be compared."""
    g = torch.Generator().manual_seed(1)
    return {"noise": torch.randn(batch["actions"].shape, generator=g), "t": torch.tensor([0.3, 0.7])}


IMAGE_TOKEN = 2047


def tiny_paligemma(directory):
    """A tiny random transformers PaliGemma (norms made non-zero), saved as safetensors in ``directory``."""
    import transformers

    config = transformers.PaliGemmaConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": 64, "vision_use_head": False},
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 2048, "model_type": "gemma"},
        image_token_id=IMAGE_TOKEN, projection_dim=64, hidden_size=64)
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():  # Gemma norms start at zero; make them count
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0, 0.1)
    model.save_pretrained(directory, safe_serialization=True)
    return model


def openpi_checkpoint(path, reference: KIModel, pi05: bool) -> None:
    """Writes ``reference``'s tensors under openpi's names, spelled out here by hand."""
    from safetensors.torch import save_file

    names = {
        "vision.patch.weight": "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight",
        "vision.patch.bias": "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.bias",
        "vision.positions": "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.position_embedding.weight",
        "vision.norm.weight": "paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.weight",
        "vision.norm.bias": "paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.bias",
        "projector.weight": "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight",
        "projector.bias": "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.bias",
        "embed.weight": "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight",
        "final_norm.weight": "paligemma_with_expert.paligemma.model.language_model.norm.weight",
        "action_in.weight": "action_in_proj.weight", "action_in.bias": "action_in_proj.bias",
        "action_out.weight": "action_out_proj.weight", "action_out.bias": "action_out_proj.bias",
    }
    vision = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers"
    for i in range(reference.config.vision_depth):
        for ours, theirs in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("q", "self_attn.q_proj"),
                             ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"), ("o", "self_attn.out_proj"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                names[f"vision.blocks.{i}.{ours}.{kind}"] = f"{vision}.{i}.{theirs}.{kind}"
    streams = (("layers", "paligemma_with_expert.paligemma.model.language_model.layers", False),
               ("expert_layers", "paligemma_with_expert.gemma_expert.model.layers", pi05))
    for i in range(reference.config.depth):
        for ours_prefix, theirs_prefix, adaptive in streams:
            for ours, theirs in (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                                 ("o", "self_attn.o_proj"), ("mlp.gate", "mlp.gate_proj"), ("mlp.up", "mlp.up_proj"),
                                 ("mlp.down", "mlp.down_proj")):
                names[f"{ours_prefix}.{i}.{ours}.weight"] = f"{theirs_prefix}.{i}.{theirs}.weight"
            for ours, theirs in (("norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
                if adaptive:
                    for kind in ("weight", "bias"):
                        names[f"{ours_prefix}.{i}.{ours}.modulation.{kind}"] = f"{theirs_prefix}.{i}.{theirs}.dense.{kind}"
                else:
                    names[f"{ours_prefix}.{i}.{ours}.weight"] = f"{theirs_prefix}.{i}.{theirs}.weight"
    expert_norm = "paligemma_with_expert.gemma_expert.model.norm"
    extra = ("time_mlp_in", "time_mlp_out") if pi05 else ("state_proj", "action_time_mlp_in", "action_time_mlp_out")
    for module in extra:
        for kind in ("weight", "bias"):
            names[f"{module}.{kind}"] = f"{module}.{kind}"
    if pi05:
        names.update({"expert_final_norm.modulation.weight": f"{expert_norm}.dense.weight",
                      "expert_final_norm.modulation.bias": f"{expert_norm}.dense.bias"})
    else:
        names["expert_final_norm.weight"] = f"{expert_norm}.weight"
    state = reference.state_dict()
    assert set(names) == set(state), set(names) ^ set(state)
    tensors = {theirs: state[ours].clone() for ours, theirs in names.items()}
    tensors["paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.zeros(7, reference.config.expert_width)
    save_file(tensors, str(path))
