"""FastTokenizer with the FAST+ files reproduces the published processor exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.data import shared_path

from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer
from kidata.tokenizers.reference import reference_decode, reference_encode


def expected_cases() -> list[dict]:
    return json.loads(shared_path("reference", "fast_universal_expected.json").read_text())["cases"]


@pytest.mark.parametrize("backend", ["tiktoken", "hf"])
def test_encode_matches_reference_ids_on_all_stored_cases(fast_plus_dir, backend):
    tokenizer = FastTokenizer.load(fast_plus_dir, backend=backend)
    for case in expected_cases():
        ids = tokenizer.encode(np.array(case["input"]))[0]
        assert ids.dtype == np.int32
        assert ids.tolist() == case["tokens"], case["name"]


def test_decode_matches_reference_actions_on_all_stored_cases(fast_plus):
    for case in expected_cases():
        horizon, dim = np.shape(case["input"])
        actions, ok = fast_plus.decode([case["tokens"]], horizon=horizon, dim=dim)
        assert actions.dtype == np.float64 and actions.shape == (1, horizon, dim)
        assert ok.tolist() == [True]
        np.testing.assert_allclose(actions[0], np.array(case["decoded"]), rtol=0, atol=1e-9)


def test_loaded_config_matches_published_files(fast_plus):
    assert fast_plus.scale == 10
    assert fast_plus.min_token == -354
    assert fast_plus.vocab_size == 2048
    assert fast_plus.backend == "tiktoken"


@pytest.mark.parametrize("shape", [(15, 32), (25, 1), (50, 14)])
def test_shapes_beyond_the_stored_cases_match_the_reference_algorithm(fast_plus, shape):
    from tokenizers import Tokenizer

    horizon, dim = shape
    hf = Tokenizer.from_file(str(shared_path("reference", "fast_universal", "tokenizer.json")))
    chunks = action_chunks(64, horizon, dim, seed=7)
    ids = fast_plus.encode(chunks)
    actions, ok = fast_plus.decode(ids, horizon=horizon, dim=dim)
    assert ok.all()
    for chunk, chunk_ids, decoded in zip(chunks, ids, actions):
        expected_ids = reference_encode(hf, chunk, scale=10, min_token=-354)
        assert chunk_ids.tolist() == expected_ids
        expected = reference_decode(hf, expected_ids, scale=10, min_token=-354, horizon=horizon, dim=dim)
        np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-9)


def test_tiktoken_and_tokenizers_backends_agree_on_4096_chunks(fast_plus_dir):
    fast = FastTokenizer.load(fast_plus_dir, backend="tiktoken")
    slow = FastTokenizer.load(fast_plus_dir, backend="hf")
    rng = np.random.default_rng(3)
    batches = [
        action_chunks(1024, 50, 14, seed=1),
        action_chunks(1024, 10, 7, seed=2),
        np.clip(np.cumsum(rng.normal(0, 0.15, (1024, 16, 14)), axis=1), -1.5, 1.5),
        rng.uniform(-1, 1, (1024, 25, 1)),
    ]
    for batch in batches:
        assert [a.tolist() for a in fast.encode(batch)] == [b.tolist() for b in slow.encode(batch)]


def test_save_then_load_keeps_ids_and_identity(fast_plus, tmp_path):
    fast_plus.save(tmp_path / "copy")
    again = FastTokenizer.load(tmp_path / "copy")
    chunks = action_chunks(32, 10, 7, seed=5)
    assert [a.tolist() for a in again.encode(chunks)] == [a.tolist() for a in fast_plus.encode(chunks)]
    assert again.sha256 == fast_plus.sha256
    config = json.loads((tmp_path / "copy" / "processor_config.json").read_text())
    assert config["min_token"] == -354 and config["scale"] == 10 and config["vocab_size"] == 2048
