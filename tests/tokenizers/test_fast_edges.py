"""FAST on input the reference mishandles: out-of-range coefficients and undecodable sequences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import idct

from kidata.tokenizers import ClipWarning, DecodeError
from kidata.tokenizers.bytelevel import MAX_CODE_POINT, byte_to_symbol
from kidata.tokenizers.reference import reference_encode


def chunk_with_constant(dim_value: dict[int, float], horizon: int = 10, dim: int = 7) -> np.ndarray:
    chunk = np.zeros((horizon, dim))
    for index, value in dim_value.items():
        chunk[:, index] = value
    return chunk


def test_coefficient_below_min_token_is_clipped_counted_and_warned(fast_plus):
    # A constant -20 has DC coefficient -20 * sqrt(10) -> rounds to -632, below min_token -354.
    chunk = chunk_with_constant({0: -20.0, 1: 0.3})
    codes, clipped = fast_plus.coefficient_codes(chunk)
    assert clipped == 1
    assert codes[0, 0] == 0  # clipped to min_token
    assert codes[0, 1] == round(0.3 * np.sqrt(10) * 10) + 354  # the neighbour is untouched
    with pytest.warns(ClipWarning, match="clipped 1 DCT coefficient"):
        ids = fast_plus.encode(chunk)
    actions, ok = fast_plus.decode(ids, horizon=10, dim=7)
    assert ok.tolist() == [True]
    np.testing.assert_allclose(actions[0, :, 0], -35.4 / np.sqrt(10), atol=1e-12)
    np.testing.assert_allclose(actions[0, :, 1], 0.3, atol=0.05 / np.sqrt(10))
    np.testing.assert_array_equal(actions[0, :, 2:], 0.0)


def test_surrogate_range_coefficient_is_clipped_where_the_reference_crashes(fast_plus, fast_plus_dir):
    from tokenizers import Tokenizer

    # A constant 1750 has DC coefficient 5533.98 -> code 55694, inside the UTF-16 surrogates.
    chunk = chunk_with_constant({2: 1750.0})
    hf = Tokenizer.from_file(str(fast_plus_dir / "tokenizer.json"))
    with pytest.raises(TypeError):
        reference_encode(hf, chunk, scale=10, min_token=-354)
    with pytest.warns(ClipWarning, match="clipped 1"):
        ids = fast_plus.encode(chunk)
    actions, ok = fast_plus.decode(ids, horizon=10, dim=7)
    assert ok.tolist() == [True]
    np.testing.assert_allclose(actions[0, :, 2], (MAX_CODE_POINT - 354) / 10 / np.sqrt(10), atol=1e-9)
    np.testing.assert_array_equal(actions[0, :, [0, 1, 3, 4, 5, 6]], 0.0)


def test_non_finite_input_is_an_error_naming_the_position(fast_plus):
    chunks = np.zeros((3, 10, 7))
    chunks[2, 4, 5] = np.nan
    with pytest.raises(ValueError, match="chunk 2, step 4, dim 5"):
        fast_plus.encode(chunks)


def _coefficients_of(fast_plus, ids) -> np.ndarray:
    text = b"".join(fast_plus._id_bytes[i] for i in ids).decode("utf-8", errors="replace")
    return np.array([ord(c) for c in text], dtype=np.float64) + fast_plus.min_token


def test_truncated_sequence_decodes_zero_padded_and_flagged(fast_plus):
    chunk = np.linspace(-0.5, 0.5, 70).reshape(10, 7)
    ids = fast_plus.encode(chunk)[0]
    truncated = ids[: len(ids) // 2]
    actions, ok = fast_plus.decode([truncated], horizon=10, dim=7)
    assert ok.tolist() == [False]
    codes = _coefficients_of(fast_plus, truncated.tolist())
    padded = np.zeros(70)
    padded[: codes.size] = codes
    np.testing.assert_allclose(actions[0], idct(padded.reshape(10, 7) / 10, axis=0, norm="ortho"), atol=1e-12)
    with pytest.raises(DecodeError, match="expected 70"):
        fast_plus.decode([truncated], horizon=10, dim=7, strict=True)


def test_overlong_sequence_is_truncated_and_flagged(fast_plus):
    chunk = np.linspace(-0.5, 0.5, 70).reshape(10, 7)
    ids = fast_plus.encode(chunk)[0]
    exact, _ = fast_plus.decode([ids], horizon=10, dim=7)
    actions, ok = fast_plus.decode([np.concatenate([ids, ids])], horizon=10, dim=7)
    assert ok.tolist() == [False]
    np.testing.assert_array_equal(actions, exact)


def test_invalid_utf8_symbols_count_as_zero_and_are_flagged(fast_plus):
    # Byte 0x80 alone is a UTF-8 continuation byte: the byte-level decoder turns it into U+FFFD.
    lone_continuation = fast_plus._hf.token_to_id(byte_to_symbol()[0x80])
    actions, ok = fast_plus.decode([[lone_continuation] * 70], horizon=10, dim=7)
    assert ok.tolist() == [False]
    np.testing.assert_array_equal(actions, 0.0)  # zeros, but flagged: never silent


def test_ids_outside_the_vocabulary_are_flagged_not_crashing(fast_plus):
    chunk = np.linspace(-0.5, 0.5, 70).reshape(10, 7)
    ids = fast_plus.encode(chunk)[0].tolist()
    actions, ok = fast_plus.decode([ids + [5000], [-1] + ids, ids], horizon=10, dim=7)
    assert ok.tolist() == [False, False, True]
    assert np.isfinite(actions).all()
    with pytest.raises(DecodeError, match="outside the vocabulary"):
        fast_plus.decode([ids + [5000]], horizon=10, dim=7, strict=True)


def test_decode_needs_the_chunk_shape(fast_plus):
    with pytest.raises(ValueError, match="horizon and dim"):
        fast_plus.decode([[1, 2, 3]])
