"""The text tokenizer adapter and the shipped demo tokenizer's PaliGemma layout."""

from __future__ import annotations

import pytest

from kidata import assets
from kidata.tokenizers.demo_text import train
from kidata.tokenizers.text import TextTokenizer

DEMO = assets.ROOT / "tokenizers" / "demo-text"


@pytest.fixture(scope="module")
def demo():
    return TextTokenizer.load(DEMO)


def test_special_ids_follow_paligemma(demo):
    assert (demo.pad_id, demo.eos_id, demo.bos_id) == (0, 1, 2)
    assert demo.image_id == 4
    assert demo.vocab_size == 2048


def test_vocabulary_ends_with_1024_loc_and_128_seg_tokens(demo):
    assert demo.loc_range() == (896, 1919)
    assert demo.seg_range() == (1920, 2047)
    assert demo.id_to_piece(demo.loc_id(7)) == "<loc0007>"
    assert demo.encode("<loc0012><seg003>") == [908, 1923]


def test_encode_decode_round_trip_with_bos_and_eos(demo):
    ids = demo.encode("Task: open the drawer, State: 1 2 3;\nAction: ", add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 1
    assert demo.decode(ids[1:-1]) == "Task: open the drawer, State: 1 2 3;\nAction: "


def test_training_script_reproduces_the_shipped_model(tmp_path):
    assert train(tmp_path).read_bytes() == (DEMO / "tokenizer.model").read_bytes()


def test_tokenizer_json_files_load_too(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = TextTokenizer.load(tmp_path)
    assert (loaded.kind, loaded.bos_id, loaded.eos_id, loaded.pad_id) == ("hf", 2, 1, 0)
    assert loaded.encode("ab", add_bos=True) == [2, 6]


def test_a_hub_id_without_network_fails_with_the_id_named(hub_offline):
    with pytest.raises(FileNotFoundError, match="google/paligemma-3b-pt-224"):
        TextTokenizer.load("google/paligemma-3b-pt-224")
