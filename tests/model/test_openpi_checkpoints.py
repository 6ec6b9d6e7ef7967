"""Pretrained checkpoints as their owners write them: openpi's pi0 / pi0.5 module tree saved by
``safetensors.torch.save_model`` (the tied embedding kept only as the backbone's ``lm_head``), and
transformers' PaliGemma saved by ``save_pretrained`` and by ``save_model``. The hub's padded
embedding is the only one cut."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_model  # noqa: E402
from support.model import tiny_paligemma  # noqa: E402
from torch import nn  # noqa: E402

from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.model.weights import (  # noqa: E402
    HUB_EMBEDDING_ROWS,
    PALIGEMMA_VOCAB,
    WeightsError,
    config_from_paligemma,
    load_openpi,
    load_paligemma,
    translate,
)

TINY = dict(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2, vision_mlp=64,
            vocab_size=300, width=64, depth=2, heads=4, kv_heads=1, head_dim=16, mlp=128,
            expert_width=32, expert_mlp=64, action_dim=8, action_horizon=4, state_dim=8)


class VisionTower(nn.Module):
    """transformers 4.53's ``SiglipVisionModel`` (openpi pins it): the transformer under ``vision_model``."""

    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model


class AdaptiveRMSNorm(nn.Module):
    """openpi's ``GemmaRMSNorm`` with ``cond_dim`` (its transformers_replace): a ``dense`` layer
    giving scale, shift and gate, and no ``weight``."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(cond_dim, 3 * dim)


class PaliGemmaWithExpertModel(nn.Module):
    """openpi's ``models_pytorch/gemma_pytorch.py``: PaliGemma, and a Gemma expert without embedding."""

    def __init__(self, config: ModelConfig, pi05: bool) -> None:
        super().__init__()
        self.paligemma = transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(
            vision_config={"hidden_size": config.vision_width, "intermediate_size": config.vision_mlp,
                           "num_hidden_layers": config.vision_depth, "num_attention_heads": config.vision_heads,
                           "image_size": config.image_size, "patch_size": config.patch_size,
                           "projection_dim": config.width, "vision_use_head": False},
            text_config={"hidden_size": config.width, "intermediate_size": config.mlp,
                         "num_hidden_layers": config.depth, "num_attention_heads": config.heads,
                         "num_key_value_heads": config.kv_heads, "head_dim": config.head_dim,
                         "vocab_size": config.vocab_size, "model_type": "gemma"},
            image_token_id=config.vocab_size - 1, projection_dim=config.width, hidden_size=config.width))
        self.paligemma.model.vision_tower = VisionTower(self.paligemma.model.vision_tower)
        self.gemma_expert = transformers.GemmaForCausalLM(transformers.GemmaConfig(
            hidden_size=config.expert_width, intermediate_size=config.expert_mlp, num_hidden_layers=config.depth,
            num_attention_heads=config.heads, num_key_value_heads=config.kv_heads, head_dim=config.head_dim,
            vocab_size=config.vocab_size))
        self.gemma_expert.model.embed_tokens = None
        if pi05:
            width = config.expert_width
            for layer in self.gemma_expert.model.layers:
                layer.input_layernorm = AdaptiveRMSNorm(width, width)
                layer.post_attention_layernorm = AdaptiveRMSNorm(width, width)
            self.gemma_expert.model.norm = AdaptiveRMSNorm(width, width)


class PI0Pytorch(nn.Module):
    """openpi's ``models_pytorch/pi0_pytorch.py`` module tree (the modules that hold weights)."""

    def __init__(self, config: ModelConfig, pi05: bool) -> None:
        super().__init__()
        width = config.expert_width
        self.paligemma_with_expert = PaliGemmaWithExpertModel(config, pi05)
        self.action_in_proj = nn.Linear(config.action_dim, width)
        self.action_out_proj = nn.Linear(width, config.action_dim)
        if pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.state_proj = nn.Linear(config.action_dim, width)
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)


def openpi_model(config: ModelConfig, pi05: bool) -> PI0Pytorch:
    torch.manual_seed(0)
    model = PI0Pytorch(config, pi05)
    with torch.no_grad():  # every tensor distinct, so a misplaced one shows
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("pi05", [True, False], ids=["pi05", "pi0"])
def test_an_openpi_checkpoint_saved_by_safetensors_loads_with_its_tied_embedding(tmp_path, pi05):
    style = {} if pi05 else {"time_conditioning": "concat", "state_input": "expert"}
    config = ModelConfig(**TINY, **style)
    theirs = openpi_model(config, pi05)
    save_model(theirs, str(tmp_path / "model.safetensors"))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        stored = set(handle.keys())
    assert "paligemma_with_expert.paligemma.lm_head.weight" in stored  # the file openpi writes:
    assert "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight" not in stored  # one name kept

    ours = KIModel(config)
    report = load_openpi(ours, tmp_path)

    assert report["fresh"] == [] and report["loaded"] == len(ours.state_dict())
    assert report["dropped"] == 1  # the expert's unused lm_head
    loaded = ours.state_dict()
    for key, tensor in theirs.state_dict().items():  # in memory: every name, the tied ones included
        name = translate(key)
        if name is not None:
            assert torch.equal(loaded[name], tensor), key
    assert torch.equal(ours.embed.weight, theirs.paligemma_with_expert.paligemma.get_input_embeddings().weight)


def test_a_transformers_paligemma_saved_by_save_pretrained_loads_its_tied_embedding(tmp_path):
    reference = tiny_paligemma(tmp_path)
    assert reference.lm_head.weight is reference.get_input_embeddings().weight  # tied
    ours = KIModel(config_from_paligemma(tmp_path, action_dim=8, action_horizon=4, expert_width=32,
                                         expert_mlp=64, state_dim=8))
    load_paligemma(ours, tmp_path)
    assert torch.equal(ours.embed.weight, reference.get_input_embeddings().weight)


def test_a_transformers_paligemma_saved_by_safetensors_loads_its_embedding_from_the_lm_head(tmp_path):
    reference = tiny_paligemma(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    save_model(reference, str(tmp_path / "model.safetensors"))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" in handle.keys() and not any("embed_tokens" in key for key in handle.keys())
    ours = KIModel(config_from_paligemma(tmp_path, action_dim=8, action_horizon=4, expert_width=32,
                                         expert_mlp=64, state_dim=8))
    report = load_paligemma(ours, tmp_path)
    assert report["dropped"] == 0
    assert torch.equal(ours.embed.weight, reference.get_input_embeddings().weight)


# ----------------------------------------------------------------------- the hub's padded embedding
def hub_sized_paligemma(directory, rows: int) -> torch.Tensor:
    """A PaliGemma checkpoint whose embedding has ``rows`` rows (the rest tiny); returns the embedding."""
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 8, "vocab_size": rows, "model_type": "gemma"}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 8, "projection_dim": 16, "vision_use_head": False}
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_id=PALIGEMMA_VOCAB, projection_dim=16, hidden_size=16))
    model.save_pretrained(directory, safe_serialization=True)
    return model.get_input_embeddings().weight.detach()


def test_the_hubs_257216_row_embedding_is_cut_to_the_tokenizers_257152_rows(tmp_path):
    embedding = hub_sized_paligemma(tmp_path, HUB_EMBEDDING_ROWS)
    model = KIModel(config_from_paligemma(tmp_path, vocab_size=PALIGEMMA_VOCAB, action_dim=4, action_horizon=4,
                                          expert_width=16, expert_mlp=32, state_dim=4))
    report = load_paligemma(model, tmp_path)
    assert report["embedding_rows_sliced"] == 64
    assert torch.equal(model.embed.weight, embedding[:PALIGEMMA_VOCAB])


def test_an_embedding_cut_to_another_vocabulary_is_refused_naming_both_sizes(tmp_path):
    hub_sized_paligemma(tmp_path, HUB_EMBEDDING_ROWS)
    model = KIModel(config_from_paligemma(tmp_path, vocab_size=2048, action_dim=4, action_horizon=4,
                                          expert_width=16, expert_mlp=32, state_dim=4))
    with pytest.raises(WeightsError, match=r"has 257216 rows, the model's vocab_size is 2048: only the hub's "
                                           r"257216 -> 257152 padding cut"):
        load_paligemma(model, tmp_path)


# ----------------------------------------------------------------- the tokenizer the embedding means
def paligemma_layout_tokenizer(*, loc_start: int = 256000):
    """A tokenizer.json of PaliGemma's size and layout (ids 0-3 special, 1024 <loc>, 128 <seg>; the
    words are placeholders); ``loc_start`` moves the <loc> block to make an impostor."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from kidata.tokenizers.text import TextTokenizer

    pieces = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"w{i}" for i in range(4, PALIGEMMA_VOCAB)]
    pieces[loc_start:loc_start + 1024] = [f"<loc{i:04d}>" for i in range(1024)]
    pieces[PALIGEMMA_VOCAB - 128:] = [f"<seg{i:03d}>" for i in range(128)]
    model = Tokenizer(WordLevel({piece: i for i, piece in enumerate(pieces)}, unk_token="<unk>"))
    return TextTokenizer(model, "hf", "paligemma-layout", sha256="")


def test_a_tokenizer_of_paligemmas_size_and_layout_passes_the_fingerprint():
    from kidata.tokenizers.text import paligemma_mismatch

    assert paligemma_mismatch(paligemma_layout_tokenizer()) is None


def test_a_tokenizer_of_paligemmas_size_with_another_layout_fails_the_fingerprint():
    from kidata.tokenizers.text import paligemma_mismatch

    problem = paligemma_mismatch(paligemma_layout_tokenizer(loc_start=1000))
    assert problem == "<loc>/<seg> ids are (1000, 2023)/(257024, 257151), PaliGemma's are (256000, 257023)/(257024, 257151)"


def test_the_demo_tokenizer_is_not_paligemmas():
    from kidata.tokenizers.text import TextTokenizer, paligemma_mismatch

    assert paligemma_mismatch(TextTokenizer.load("tokenizers/demo-text")) == "2048 ids, PaliGemma's has 257152"
