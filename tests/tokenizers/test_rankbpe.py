"""The rank-based encoder: which merges it applies up front, and when it refuses a vocabulary."""

from __future__ import annotations

import json

import numpy as np

from kidata.tokenizers.bytelevel import byte_to_symbol, token_bytes
from kidata.tokenizers.rankbpe import RankedBpe, _merge_chain


def test_chain_is_the_first_pair_then_its_doublings():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"\xc5\xa2": 256, b"\xc5\xa2" * 2: 257, b"\xc5\xa2" * 4: 258, b"ab": 259, b"\xc5\xa2" * 8: 260})
    chain = _merge_chain(ranks, spare=[0xFF, 0xFE, 0xFD, 0xFC])
    assert chain == [(b"\xc5\xa2", b"\xff"), (b"\xff\xff", b"\xfe"), (b"\xfe\xfe", b"\xfd")]


def test_a_first_merge_of_one_repeated_byte_starts_the_chain_too():
    # a kidata fit's zero coefficient is one byte: its runs pair up left to right in both BPEs
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"aa": 256, b"aaaa": 257, b"ab": 258})
    assert _merge_chain(ranks, spare=[0xFF, 0xFE]) == [(b"aa", b"\xff"), (b"\xff\xff", b"\xfe")]


def test_no_chain_when_the_first_merge_is_longer_than_two_bytes():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"abc": 256})
    assert _merge_chain(ranks, spare=[0xFF]) == []


def test_fast_plus_gets_a_seven_merge_chain(fast_plus_dir):
    spec = json.loads((fast_plus_dir / "tokenizer.json").read_text())
    ranked, reason = RankedBpe.build(spec, 0xD7FF)
    assert reason is None and ranked.chain_length == 7


def test_layouts_that_ranks_cannot_reproduce_are_refused():
    symbols = byte_to_symbol()
    vocab = {symbols[b]: b for b in range(256)}
    vocab[symbols[97] + symbols[98]] = 257
    vocab[symbols[98] + symbols[99]] = 256
    spec = {
        "normalizer": None,
        "added_tokens": [],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": [[symbols[97], symbols[98]], [symbols[98], symbols[99]]]},
    }
    ranked, reason = RankedBpe.build(spec, 0x7FF)
    assert ranked is None and reason == "merge order and token ids disagree"
    spec["pre_tokenizer"] = {"type": "Metaspace"}
    assert RankedBpe.build(spec, 0x7FF)[1] == "pre-tokenizer is not ByteLevel"


def test_without_the_gpt2_split_a_string_is_one_piece_in_both_encoders():
    # Codes 32 (space) and 48-57 (digits) would be cut apart by the GPT-2 split; a kidata fit
    # records use_regex = false, and the rank encoder must not split either.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    strings = ["".join(chr(c) for c in row) for row in np.random.default_rng(0).integers(28, 60, (400, 30))]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    symbols = byte_to_symbol()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=[symbols[b] for b in range(128)], show_progress=False)
    tokenizer.train_from_iterator(strings, trainer=trainer)
    ranked, reason = RankedBpe.build(json.loads(tokenizer.to_str()), 127)
    assert reason is None
    assert [ranked.encode(s) for s in strings] == [e.ids for e in tokenizer.encode_batch(strings)]
    # merges join digits with what the GPT-2 split would cut them from (spaces, punctuation)
    learned = [token_bytes(t) for t in json.loads(tokenizer.to_str())["model"]["vocab"] if len(token_bytes(t)) > 1]
    digits = set(b"0123456789")
    assert any(set(t) & digits and set(t) - digits for t in learned)
