"""The published FAST processor's algorithm, one chunk at a time, as a baseline.

Written from the algorithm's description (DCT-II ortho along time, ``np.around(c * scale)``, codes
below ``min_token`` raised to it, ``"".join(map(chr, ...))``, one ``tokenizers`` call per chunk) so
that tests can check ``FastTokenizer`` against it on shapes beyond the stored expected outputs, and
``benchmarks/fast_bench.py`` can time the batched encoder against it. Not for production use: it
keeps the reference's silent behaviours (clipping, zeros on decode failure).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct, idct


def reference_encode(tokenizer, chunk: np.ndarray, *, scale: float, min_token: int) -> list[int]:
    """Token ids of one chunk [H, D] with a ``tokenizers.Tokenizer``."""
    coefficients = np.around(dct(chunk, axis=0, norm="ortho") * scale)
    string = "".join(map(chr, np.maximum(coefficients.flatten() - min_token, 0).astype(int)))
    return tokenizer.encode(string, add_special_tokens=False).ids


def reference_decode(
    tokenizer, ids: list[int], *, scale: float, min_token: int, horizon: int, dim: int
) -> np.ndarray:
    """Actions [H, D] of one id sequence; zeros when the coefficient count is wrong."""
    text = tokenizer.decode(ids)
    coefficients = np.array(list(map(ord, text))) + min_token
    if coefficients.size != horizon * dim:
        coefficients = np.zeros(horizon * dim)
    return idct(coefficients.reshape(horizon, dim) / scale, axis=0, norm="ortho")
