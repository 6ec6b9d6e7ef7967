"""FastTokenizer.fit: a vocabulary without dead entries that encodes every representable chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.bytelevel import byte_to_symbol, reachable_bytes, token_bytes
from kidata.tokenizers.fast import FastTokenizer, quantization_rmse


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    return action_chunks(3000, 10, 7, seed=11)


@pytest.fixture(scope="module")
def fitted(chunks) -> FastTokenizer:
    return FastTokenizer.fit(chunks, vocab_size=512, scale=10.0)


def vocabulary(tokenizer: FastTokenizer) -> dict[str, int]:
    return json.loads(tokenizer._hf.to_str())["model"]["vocab"]


def test_base_alphabet_is_exactly_the_bytes_the_encoder_can_emit(fitted):
    base = sorted(token_bytes(t)[0] for t in vocabulary(fitted) if len(token_bytes(t)) == 1)
    assert base == reachable_bytes(fitted.max_code)
    assert fitted.max_code == 0x7FF
    # 0xC0, 0xC1 and every lead byte of a 3- or 4-byte sequence can never be produced.
    assert not {0xC0, 0xC1, *range(0xE0, 0x100)} & set(base)
    assert len(base) == 222


def test_vocabulary_size_and_merges_fill_the_request(fitted):
    spec = json.loads(fitted._hf.to_str())
    assert fitted.vocab_size == 512
    assert len(spec["model"]["merges"]) == 512 - 222


def test_every_entry_is_a_byte_or_a_merge_the_encoder_can_produce(fitted):
    # Each merged token's bytes are a valid UTF-8 fragment of code points in range, so some
    # coefficient string contains it; a raw alphabet character outside the byte table would not.
    symbols = set(byte_to_symbol().values())
    for token in vocabulary(fitted):
        assert set(token) <= symbols


def test_coefficients_never_seen_in_training_still_encode_and_decode_exactly(fitted, chunks):
    seen = set(fitted.coefficient_codes(chunks)[0].ravel().tolist())
    unseen_value = 30.0  # DC 94.9 -> code far above anything in the training chunks
    chunk = np.zeros((10, 7))
    chunk[:, 3] = unseen_value
    codes, clipped = fitted.coefficient_codes(chunk)
    assert clipped == 0 and codes.max() not in seen
    actions, ok = fitted.decode(fitted.encode(chunk), horizon=10, dim=7)
    assert ok.tolist() == [True]
    np.testing.assert_allclose(actions[0, :, 3], round(unseen_value * np.sqrt(10) * 10) / 10 / np.sqrt(10), atol=1e-12)


def test_fit_is_deterministic(chunks, fitted):
    again = FastTokenizer.fit(chunks, vocab_size=512, scale=10.0)
    assert again._hf.to_str() == fitted._hf.to_str()
    assert again.sha256 == fitted.sha256


def test_fitted_round_trip_error_is_the_rounding_error(fitted, chunks):
    ids = fitted.encode(chunks[:500])
    actions, ok = fitted.decode(ids, horizon=10, dim=7)
    assert ok.all()
    rmse = np.sqrt(np.mean((actions - chunks[:500]) ** 2))
    assert rmse == pytest.approx(quantization_rmse(chunks[:500], 10.0), rel=1e-9)
    assert np.mean([len(i) for i in ids]) < 70 / 3  # compresses well below one token per value


def test_save_load_round_trip_and_shape_in_config(fitted, chunks, tmp_path):
    fitted.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "processor_config.json").read_text())
    assert config == {
        "action_dim": 7,
        "min_token": fitted.min_token,
        "scale": 10,
        "time_horizon": 10,
        "vocab_size": 512,
        # what transformers.AutoProcessor needs to load it (tests/test_fast_interop.py)
        "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
        "processor_class": "UniversalActionProcessor",
    }
    loaded = FastTokenizer.load(tmp_path / "tok")
    assert loaded.max_token == fitted.max_token and loaded.backend == "tiktoken"
    assert [a.tolist() for a in loaded.encode(chunks[:64])] == [a.tolist() for a in fitted.encode(chunks[:64])]
    actions, ok = loaded.decode(loaded.encode(chunks[:4]))  # horizon and dim come from the config
    assert actions.shape == (4, 10, 7) and ok.all()


def test_target_rmse_picks_the_smallest_scale_that_meets_it(chunks):
    tokenizer = FastTokenizer.fit(chunks, vocab_size=400, target_rmse=0.01)
    assert quantization_rmse(chunks, tokenizer.scale) <= 0.01
    assert quantization_rmse(chunks, tokenizer.scale * 0.99) > 0.01


@pytest.mark.parametrize("shape", [(50, 8), (25, 1), (15, 32)])
def test_fit_works_on_other_shapes(shape):
    horizon, dim = shape
    chunks = action_chunks(800, horizon, dim, seed=3)
    tokenizer = FastTokenizer.fit(chunks, vocab_size=300)
    actions, ok = tokenizer.decode(tokenizer.encode(chunks[:50]))
    assert ok.all() and actions.shape == (50, horizon, dim)
    rmse = np.sqrt(np.mean((actions - chunks[:50]) ** 2))
    assert rmse == pytest.approx(quantization_rmse(chunks[:50], 10.0), rel=1e-9)


def test_vocab_smaller_than_the_byte_alphabet_is_refused(chunks):
    with pytest.raises(ValueError, match="byte alphabet"):
        FastTokenizer.fit(chunks, vocab_size=200)


def test_unnormalized_data_beyond_the_code_range_is_refused():
    chunks = np.zeros((4, 10, 2))
    chunks[0, :, 0] = 3000.0
    with pytest.raises(ValueError, match="lower the scale"):
        FastTokenizer.fit(chunks)


def test_training_coefficients_land_in_one_run_of_letters(fitted, chunks):
    import regex

    from kidata.tokenizers.bytelevel import GPT2_SPLIT_PATTERN, from_code_points

    codes, _ = fitted.coefficient_codes(chunks)
    assert 0xF8 <= codes.min() and codes.max() <= 0x2C1
    # One pre-tokenizer piece per chunk: merges may span every coefficient.
    for row in codes[:50]:
        assert len(regex.findall(GPT2_SPLIT_PATTERN, from_code_points(row))) == 1


def test_values_somewhat_below_the_training_minimum_are_represented_not_clipped(fitted, chunks):
    codes, _ = fitted.coefficient_codes(chunks)
    lowest = int(codes.min()) + fitted.min_token  # smallest rounded training coefficient
    chunk = np.zeros((10, 7))
    chunk[:, 0] = (lowest - 50) / 10 / np.sqrt(10)  # DC 5 units below anything seen
    assert fitted.coefficient_codes(chunk)[1] == 0
    actions, ok = fitted.decode(fitted.encode(chunk), horizon=10, dim=7)
    assert ok.all()
    np.testing.assert_allclose(actions[0], chunk, atol=0.05)
