"""``prompt_format = "pi0"``: openpi pi0's layout (the plain task, then "\\n" as a start-of-answer
token; the state goes to the action expert as a vector), so a model started from a pi0 checkpoint
sees the prompt it was trained on. Ids come from the shipped demo SentencePiece model; the layout is
openpi's ``PaligemmaTokenizer.tokenize(prompt, state=None)``."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece

from kidata import assets
from kidata.manifest import Encoding, Manifest, ManifestMismatch, TokenizerRef
from kidata.pipelines.recipe import RecipeError, parse_recipe
from kidata.recipe import MixtureConfig, Recipe
from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer
from kidata.tokenizers.prompt import SampleEncoder
from kidata.tokenizers.text import TextTokenizer
from kidata.training.compatible import check_compatible
from kidata.training.config import load

PROMPT = "  Pick_up the red cup\n"  # openpi cleans: strip, "_" -> " ", "\n" -> " ", case kept
STATE = np.array([0.1, -0.5, 0.3], dtype=np.float32)


@pytest.fixture(scope="module")
def text() -> TextTokenizer:
    return TextTokenizer.load("tokenizers/demo-text")


@pytest.fixture(scope="module")
def fast() -> FastTokenizer:
    return FastTokenizer.fit(action_chunks(500, 10, 7, seed=2), vocab_size=512)


def openpi_pi0_prompt_ids(prompt: str) -> list[int]:
    """The ids openpi's pi0 prompt has, read straight from the SentencePiece model: BOS + the cleaned
    task, then "\\n" from an encode call of its own (openpi's "start of answer" token)."""
    model = sentencepiece.SentencePieceProcessor(model_file=str(assets.shipped("tokenizers/demo-text") / "tokenizer.model"))
    cleaned = prompt.strip().replace("_", " ").replace("\n", " ")
    return model.encode(cleaned, add_bos=True) + model.encode("\n")


def test_the_pi0_inference_prompt_is_openpis_task_and_newline_with_no_state_text(text, fast):
    encoder = SampleEncoder(text, fast, prompt_format="pi0", state_encoding="continuous")
    sample = encoder.robot_prompt(PROMPT, STATE)
    expected = openpi_pi0_prompt_ids(PROMPT)
    assert expected[0] == text.bos_id and text.decode(expected[1:]) == "Pick up the red cup\n"
    assert sample.tokens.tolist() == expected
    assert sample.prefix_length == len(expected) and not sample.ar.any() and not sample.loss.any()
    assert sample.state_slot == len(expected) and sample.state.tolist() == STATE.tolist()


def test_a_pi0_training_sample_follows_the_openpi_prefix_with_fast_ids_bar_and_eos(text, fast):
    chunk = action_chunks(1, 10, 7, seed=3)[0]
    sample = SampleEncoder(text, fast, prompt_format="pi0", state_encoding="continuous").robot(
        PROMPT, STATE, chunk, np.ones(10, bool))
    prefix = openpi_pi0_prompt_ids(PROMPT)
    action_ids = [text.vocab_size - 1 - 128 - t for t in fast.encode(chunk)[0].tolist()]  # openpi's FAST mapping
    postfix = action_ids + text.encode("|") + [text.eos_id]
    assert sample.tokens.tolist() == prefix + postfix
    assert sample.ar.tolist() == [False] * len(prefix) + [True] * len(postfix)
    assert sample.loss.tolist() == sample.ar.tolist()
    assert sample.fast_span == (len(prefix), len(prefix) + len(action_ids))


def test_pi0_with_the_state_in_the_text_is_refused_by_the_encoder_naming_both(text, fast):
    with pytest.raises(ValueError, match=r"prompt_format 'pi0' gives the state to the action expert as a vector, "
                                         r"state_encoding 'text' writes it into the prompt"):
        SampleEncoder(text, fast, prompt_format="pi0", state_encoding="text")


def test_pi0_with_the_state_in_the_text_is_refused_by_the_recipe_naming_both():
    recipe = {"mixture": {"name": "m", "prompt_format": "pi0", "state_encoding": "special"},
              "sources": [{"name": "s", "reader": "rlds", "path": "x", "dataset": "bridge_dataset"}]}
    with pytest.raises(RecipeError, match=r"prompt_format = \"pi0\" gives the state to the action expert as a vector, "
                                          r"state_encoding = 'special' writes it into the prompt"):
        parse_recipe(recipe)


def pi0_manifest() -> Manifest:
    encoding = Encoding(state_encoding="continuous", prompt_format="pi0", action_horizon=10, action_dim=7, image_size=224,
                        max_tokens=64, normalization="quantile", fast_token_rule="openpi", text_vocab_size=2048,
                        fast_token_range=(1408, 1919))
    recipe = Recipe(MixtureConfig("pi0", state_encoding="continuous", prompt_format="pi0"), (), ".")
    return Manifest("0", recipe, "", TokenizerRef("t", "a"), TokenizerRef("f", "b"), encoding)


@pytest.mark.parametrize("state_input, refused", [("prefix", True), ("expert", False)])
def test_a_pi0_mixture_trains_only_a_model_whose_expert_takes_the_state(state_input, refused):
    config = load("ki_tiny", {"model": {"state_input": state_input, "image_size": 224}})
    if refused:
        with pytest.raises(ManifestMismatch, match=r"prompt layout: data prompt_format 'pi0' \(openpi's pi0: state in "
                                                   r"the action expert\), model state_input 'prefix'"):
            check_compatible(pi0_manifest(), config)
    else:
        check_compatible(pi0_manifest(), config)
