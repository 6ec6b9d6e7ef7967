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


def reference_fit(chunks: np.ndarray, *, scale: float, vocab_size: int):
    """The published processor's ``fit``: (``tokenizers.Tokenizer``, ``min_token``).

    As published: ``min_token`` is the smallest rounded training coefficient, so codes start at
    chr(0); a ``ByteLevelBPETokenizer`` (GPT-2 split) is trained by ``BpeTrainer`` with
    ``min_frequency=2`` and the raw characters chr(0)..chr(max - min) as initial alphabet (most of
    them are not byte-level symbols, which is where its dead ids come from). Raises ``ValueError``
    where the published code asserts (coefficient span above ``vocab_size``).
    """
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.trainers import BpeTrainer

    rounded = np.around(dct(np.asarray(chunks, dtype=np.float64), axis=1, norm="ortho") * scale)
    rounded = rounded.reshape(len(rounded), -1)
    min_token, max_token = int(rounded.min()), int(rounded.max())
    if max_token - min_token > vocab_size:
        raise ValueError(f"Vocab size {vocab_size} is too small for the range of tokens {max_token - min_token}")
    bpe = ByteLevelBPETokenizer()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=[chr(i) for i in range(max_token - min_token + 1)],
        max_token_length=10000,
    )
    strings = ("".join(map(chr, (row - min_token).astype(int))) for row in rounded)
    bpe._tokenizer.train_from_iterator(strings, trainer=trainer)
    return bpe._tokenizer, min_token
