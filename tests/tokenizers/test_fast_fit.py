"""FastTokenizer.fit: a vocabulary without dead entries that encodes every representable chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.fft import dct, idct

from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.base import ClipWarning
from kidata.tokenizers.bytelevel import byte_to_symbol, reachable_bytes, token_bytes
from kidata.tokenizers.fast import FastTokenizer, default_margin, quantization_rmse


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    return action_chunks(3000, 10, 7, seed=11)


@pytest.fixture(scope="module")
def fitted(chunks) -> FastTokenizer:
    return FastTokenizer.fit(chunks, vocab_size=512, scale=10.0)


def vocabulary(tokenizer: FastTokenizer) -> dict[str, int]:
    return json.loads(tokenizer._hf.to_str())["model"]["vocab"]


def rounded(chunks: np.ndarray, scale: float = 10.0) -> np.ndarray:
    return np.rint(dct(chunks, axis=1, norm="ortho") * scale)


def test_codes_span_the_training_range_plus_the_margin_on_each_side(fitted, chunks):
    low, high = int(rounded(chunks).min()), int(rounded(chunks).max())
    margin = default_margin(high - low, 512)
    assert margin == 8  # an eighth of the 64-code span
    assert fitted.min_token == low - margin
    assert fitted.max_token == high + margin


def test_base_alphabet_is_exactly_the_bytes_the_encoder_can_emit(fitted):
    base = sorted(token_bytes(t)[0] for t in vocabulary(fitted) if len(token_bytes(t)) == 1)
    assert base == reachable_bytes(fitted.max_code)
    # The whole code range is below U+0080: every coefficient is one byte, zero included.
    assert base == list(range(fitted.max_code + 1)) and fitted.max_code == 80


def test_vocabulary_size_and_merges_fill_the_request(fitted):
    spec = json.loads(fitted._hf.to_str())
    assert fitted.vocab_size == 512
    assert len(spec["model"]["merges"]) == 512 - 81


def test_a_wider_range_adds_only_the_lead_and_continuation_bytes_it_reaches():
    chunks = np.zeros((4, 10, 1))
    chunks[0, :, 0], chunks[1, :, 0] = -1.0, 5.0  # DC -31.6 .. 158.1 at scale 10: span 190
    tokenizer = FastTokenizer.fit(chunks, vocab_size=512, margin=0, min_frequency=1)
    assert tokenizer.max_code == 190
    base = sorted(token_bytes(t)[0] for t in vocabulary(tokenizer) if len(token_bytes(t)) == 1)
    # U+0080..U+00BE: lead byte 0xC2 and continuation bytes 0x80..0xBE
    assert base == [*range(0x80), *range(0x80, 0xBF), 0xC2]


def test_every_entry_is_a_byte_or_a_merge_the_encoder_can_produce(fitted):
    # Each merged token's bytes are a valid UTF-8 fragment of code points in range, so some
    # coefficient string contains it; a raw alphabet character outside the byte table would not.
    symbols = set(byte_to_symbol().values())
    for token in vocabulary(fitted):
        assert set(token) <= symbols


def test_coefficients_never_seen_in_training_still_encode_and_decode_exactly(fitted, chunks):
    seen = set(fitted.coefficient_codes(chunks)[0].ravel().tolist())
    # Every code of the range, seen in training or in the margin, round-trips alone.
    for code in range(fitted.max_code + 1):
        ids = fitted._hf.encode(chr(code) * 70).ids
        assert fitted._hf.decode(ids) == chr(code) * 70
    chunk = np.zeros((10, 7))
    chunk[0, 3] = (fitted.max_token - 1) / 10  # a DCT input with one coefficient past the training max
    coefficients = idct(chunk, axis=0, norm="ortho")
    codes, clipped = fitted.coefficient_codes(coefficients)
    assert clipped == 0 and codes.max() not in seen
    actions, ok = fitted.decode(fitted.encode(coefficients), horizon=10, dim=7)
    assert ok.tolist() == [True]
    np.testing.assert_allclose(actions[0], coefficients, atol=1e-12)


def test_values_beyond_the_margin_are_clipped_counted_and_warned(fitted):
    chunk = np.zeros((10, 7))
    chunk[0, 0] = (fitted.max_token + 3) / 10
    with pytest.warns(ClipWarning, match="clipped 1 DCT coefficient"):
        ids = fitted.encode(idct(chunk, axis=0, norm="ortho"))
    actions, ok = fitted.decode(ids, horizon=10, dim=7)
    assert ok.all()
    np.testing.assert_allclose(dct(actions[0], axis=0, norm="ortho")[0, 0], fitted.max_token / 10, atol=1e-9)


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
        "max_token": fitted.max_token,  # the clip range, for the AutoProcessor module
        "scale": 10,
        "time_horizon": 10,
        "vocab_size": 512,
        # what transformers.AutoProcessor needs to load it (tests/tokenizers/test_fast_interop.py)
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
    with pytest.raises(ValueError, match="vocab_size 64 is smaller than the 81-symbol byte alphabet"):
        FastTokenizer.fit(chunks, vocab_size=64, margin=8)


def test_unnormalized_data_beyond_the_code_range_is_refused():
    chunks = np.zeros((4, 10, 2))
    chunks[0, :, 0] = 3000.0
    with pytest.raises(ValueError, match="lower the scale"):
        FastTokenizer.fit(chunks)


def test_a_chunk_is_one_piece_for_the_pre_tokenizer(fitted, chunks):
    spec = json.loads(fitted._hf.to_str())
    assert spec["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                     "use_regex": False}
    # Codes 32 (space) and digits lie in the range: merges must still cross them.
    codes, _ = fitted.coefficient_codes(chunks)
    assert {32, *range(48, 58)} <= set(codes.ravel().tolist())
    crossing = [t for t in vocabulary(fitted) if len(t) > 1 and " " in bytes(token_bytes(t)).decode("latin-1")]
    assert crossing


def test_at_least_as_compact_as_the_published_fit_on_the_same_chunks(chunks):
    from kidata.tokenizers.reference import reference_encode, reference_fit

    train, heldout = chunks[:2500], chunks[2500:]
    for vocab_size in (128, 256, 512):
        published, min_token = reference_fit(train, scale=10.0, vocab_size=vocab_size)
        theirs = np.mean([len(reference_encode(published, c, scale=10.0, min_token=min_token)) for c in heldout])
        ours = np.mean([len(ids) for ids in FastTokenizer.fit(train, vocab_size=vocab_size).encode(heldout)])
        assert ours <= theirs, (vocab_size, ours, theirs)


def test_values_somewhat_below_the_training_minimum_are_represented_not_clipped(fitted, chunks):
    codes, _ = fitted.coefficient_codes(chunks)
    lowest = int(codes.min()) + fitted.min_token  # smallest rounded training coefficient
    chunk = np.zeros((10, 7))
    chunk[:, 0] = (lowest - 5) / 10 / np.sqrt(10)  # DC half a unit below anything seen
    assert fitted.coefficient_codes(chunk)[1] == 0
    actions, ok = fitted.decode(fitted.encode(chunk), horizon=10, dim=7)
    assert ok.all()
    np.testing.assert_allclose(actions[0], chunk, atol=0.05)
