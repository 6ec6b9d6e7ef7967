"""The ``processing_action_tokenizer.py`` that ``FastTokenizer.save`` writes next to a tokenizer, so
``transformers.AutoProcessor.from_pretrained(directory, trust_remote_code=True)`` (how openpi and
LeRobot load FAST) loads kidata's fitted tokenizers. kidata never imports this module: it is the
file other tools run, written from the published processor's interface (``__call__`` on chunks,
``decode(tokens, time_horizon=, action_dim=)``); it needs numpy, scipy and transformers only.
Tested: its ids and actions equal ``FastTokenizer``'s on held-out chunks, inside and outside the
fitted range.

Rounded coefficients are clipped to ``[min_token, max_token]`` (``processor_config.json``), as
``FastTokenizer`` clips them: a code past the fitted range has no byte in the vocabulary, so BPE
would drop it and the chunk would decode to zeros. A config without ``max_token`` (the published
FAST+) clips at the last code point below the UTF-16 surrogates.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct, idct
from transformers import PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

MAX_CODE_POINT = 0xD7FF  # the last code point below the UTF-16 surrogates (kidata.tokenizers.bytelevel)


class UniversalActionProcessor(ProcessorMixin):
    """FAST: DCT-II (orthonormal, along time) of each normalized chunk, scaled and rounded, codes
    shifted by ``min_token`` into characters, then byte-level BPE."""

    attributes = ["bpe_tokenizer"]
    bpe_tokenizer_class = "AutoTokenizer"

    def __init__(self, bpe_tokenizer: PreTrainedTokenizerFast, scale: float = 10, vocab_size: int = 1024,
                 min_token: int = 0, max_token: int | None = None, action_dim: int | None = None,
                 time_horizon: int | None = None, **_):
        # all positional-or-keyword: transformers passes a processor_config.json key to __init__
        # only when it is one of the positional parameters (keyword-only ones are dropped)
        self.scale, self.vocab_size, self.min_token = scale, vocab_size, min_token
        self.max_token = min_token + MAX_CODE_POINT if max_token is None else max_token
        self.time_horizon, self.action_dim = time_horizon, action_dim
        self.called_time_horizon, self.called_action_dim = time_horizon, action_dim
        super().__init__(bpe_tokenizer)

    def __call__(self, action_chunk: np.ndarray) -> list[list[int]]:
        chunks = np.asarray(action_chunk, dtype=np.float64)
        if chunks.ndim == 2:
            chunks = chunks[None]
        self.called_time_horizon, self.called_action_dim = chunks.shape[1], chunks.shape[2]
        out = []
        for chunk in chunks:
            rounded = np.around(dct(chunk, axis=0, norm="ortho") * self.scale).flatten()
            codes = np.clip(rounded, self.min_token, self.max_token) - self.min_token
            text = "".join(map(chr, codes.astype(int)))
            out.append(self.bpe_tokenizer(text, add_special_tokens=False)["input_ids"])
        return out

    def decode(self, tokens: list[list[int]], *, time_horizon: int | None = None,
               action_dim: int | None = None) -> np.ndarray:
        horizon = time_horizon or self.time_horizon or self.called_time_horizon
        dim = action_dim or self.action_dim or self.called_action_dim
        actions = []
        for ids in tokens:
            text = self.bpe_tokenizer.decode(ids)
            codes = np.array(list(map(ord, text))) + self.min_token
            if codes.size != horizon * dim:  # a sequence that is not one chunk decodes to zeros, as published
                codes = np.zeros(horizon * dim)
            actions.append(idct(codes.reshape(horizon, dim) / self.scale, axis=0, norm="ortho"))
        return np.stack(actions)
