"""Naive binning (the paper's ablation): same interface as FAST."""

from __future__ import annotations

import numpy as np
import pytest

from kidata.tokenizers import BinTokenizer, ClipWarning, DecodeError


def test_values_map_to_uniform_bins_over_minus_one_to_one():
    chunk = np.array([[-1.0, 0.0, 0.999], [-0.5, 0.5, 1.0]])
    ids = BinTokenizer().encode(chunk)
    assert ids[0].dtype == np.int32
    assert ids[0].tolist() == [0, 128, 255, 64, 192, 255]


def test_decode_returns_bin_centres():
    actions, ok = BinTokenizer(n_bins=4).decode([[0, 1, 2, 3]], horizon=2, dim=2)
    assert ok.tolist() == [True]
    np.testing.assert_array_equal(actions[0], [[-0.75, -0.25], [0.25, 0.75]])


def test_stride_keeps_every_fifth_step_and_interpolates_back():
    tokenizer = BinTokenizer(n_bins=256, stride=5)
    chunk = np.linspace(-1, 1, 10)[:, None].repeat(2, axis=1)
    ids = tokenizer.encode(chunk)[0]
    assert len(ids) == tokenizer.tokens_per_chunk(10, 2) == 4
    actions, ok = tokenizer.decode([ids], horizon=10, dim=2)
    assert ok.all()
    # Steps 0 and 5 are kept; 1..4 lie on the line between them, 6..9 hold step 5.
    np.testing.assert_allclose(actions[0, 1:5, 0], np.linspace(actions[0, 0, 0], actions[0, 5, 0], 6)[1:5])
    np.testing.assert_array_equal(actions[0, 6:, 0], actions[0, 5, 0])


def test_out_of_range_values_are_clipped_and_counted():
    with pytest.warns(ClipWarning, match="clipped 2 value"):
        ids = BinTokenizer().encode(np.array([[-3.0, 7.0, 0.0]]))
    assert ids[0].tolist() == [0, 255, 128]


def test_bad_sequences_are_flagged_or_raise_when_strict():
    tokenizer = BinTokenizer()
    actions, ok = tokenizer.decode([[1, 2, 3], [1, 2], [1, 2, 900]], horizon=1, dim=3)
    assert ok.tolist() == [True, False, False]
    assert np.isfinite(actions).all()
    with pytest.raises(DecodeError):
        tokenizer.decode([[1, 2]], horizon=1, dim=3, strict=True)
