"""The rank-based encoder: which merges it applies up front, and when it refuses a vocabulary."""

from __future__ import annotations

import json

from kidata.tokenizers.bytelevel import byte_to_symbol
from kidata.tokenizers.rankbpe import RankedBpe, _merge_chain


def test_chain_is_the_first_pair_then_its_doublings():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"\xc5\xa2": 256, b"\xc5\xa2" * 2: 257, b"\xc5\xa2" * 4: 258, b"ab": 259, b"\xc5\xa2" * 8: 260})
    chain = _merge_chain(ranks, spare=[0xFF, 0xFE, 0xFD, 0xFC])
    assert chain == [(b"\xc5\xa2", b"\xff"), (b"\xff\xff", b"\xfe"), (b"\xfe\xfe", b"\xfd")]


def test_no_chain_when_the_first_merge_repeats_one_byte():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"aa": 256, b"aaaa": 257})
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
    assert RankedBpe.build(spec, 0x7FF)[1] == "pre-tokenizer is not ByteLevel with the GPT-2 split"
