"""FAST action tokenizer: DCT along time, scaled rounding, byte-level BPE (Pertsch et al., 2025).

Compatible with the published processor and its files (``processor_config.json`` +
``tokenizer.json``): with the FAST+ files loaded, ``encode`` returns the reference's ids and
``decode`` its actions. Where the reference is wrong we differ, on purpose and documented:

* Out-of-range coefficients. A chunk coefficient ``c`` maps to the code point
  ``rint(c * scale) - min_token``. Codes below 0 (the reference clips them silently) or above
  ``max_token - min_token`` (for FAST+ the last code point before the UTF-16 surrogates, which crash
  the reference) are clipped to the representable range, counted, and reported with a
  ``ClipWarning``. Neighbouring coefficients are never affected.
* Decoding is checked. A sequence that does not give exactly H * D valid coefficients is returned
  with ``ok=False`` after a relaxed decode (invalid ids and symbols count as coefficient 0, the
  coefficient list is zero-padded or truncated to H * D), or raises ``DecodeError`` with
  ``strict=True``. The reference returns zeros or garbage without saying so.
* ``fit`` builds a vocabulary whose base alphabet is exactly the bytes the encoder can emit, so no
  id is wasted on a symbol the byte-level pre-tokenizer never produces, and every representable
  coefficient string encodes (the reference drops coefficients unseen in training).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from scipy.fft import dct, idct

from kidata.tokenizers import bytelevel
from kidata.tokenizers.base import ClipWarning, DecodeError, as_chunk_batch, as_token_lists
from kidata.tokenizers.rankbpe import RankedBpe

PROCESSOR_CONFIG = "processor_config.json"
# what lets transformers.AutoProcessor load a saved tokenizer: our own processor module, written
# beside it (kidata/tokenizers/hf_processor.py); these keys never change the ids
HF_PROCESSOR_FILE = "processing_action_tokenizer.py"
INTEROP_CONFIG = {"auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
                  "processor_class": "UniversalActionProcessor"}
TOKENIZER_FILE = "tokenizer.json"
KIDATA_FILE = "kidata_fast.json"  # our additions; the reference loader ignores this file

Backend = Literal["auto", "tiktoken", "hf"]

def default_margin(span: int, vocab_size: int) -> int:
    """Codes a fit keeps on each side of the training range, for values its sample has not seen.

    An eighth of the span, at most ``vocab_size // 32``: each margin code costs an id of the base
    alphabet, and at small vocabularies those ids buy more as merges (benchmarks/fast_fit_bench.py
    measured both, with the held-out coefficients this margin clips: none on its benchmark set)."""
    return max(2, min(-(-span // 8), vocab_size // 32))


@dataclass(frozen=True)
class EncodeResult:
    """Token ids per chunk and how many coefficients had to be clipped to encode them."""

    tokens: list[np.ndarray]
    clipped: int


class FastTokenizer:
    """FAST: ``encode`` [B, H, D] normalized actions -> int32 ids; ``decode`` ids -> actions.

    Build it with ``load`` (a directory in the published layout), ``fit`` (your own data), or from
    a ``tokenizers.Tokenizer`` directly.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        scale: float,
        min_token: int,
        max_token: int | None = None,
        time_horizon: int | None = None,
        action_dim: int | None = None,
        backend: Backend = "auto",
        extra_config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._hf = tokenizer
        self.scale = float(scale)
        self.min_token = int(min_token)
        max_code = bytelevel.MAX_CODE_POINT if max_token is None else int(max_token) - self.min_token
        if not 0 <= max_code <= bytelevel.MAX_CODE_POINT:
            raise ValueError(
                f"max_token {max_token} with min_token {min_token} leaves the code range "
                f"[0, {bytelevel.MAX_CODE_POINT}]"
            )
        self.max_code = max_code
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self._extra_config = dict(extra_config or {})
        self.metadata = dict(metadata or {})
        self._json = tokenizer.to_str()
        spec = json.loads(self._json)
        vocab: dict[str, int] = spec["model"]["vocab"]
        self.vocab_size = len(vocab)
        self._id_bytes = bytelevel.id_to_bytes_table(vocab) + [b"\xff"]  # 0xFF: never UTF-8
        self._id_byte_lengths = np.array([len(b) for b in self._id_bytes], dtype=np.int64)
        base = {self._id_bytes[i][0] for i in vocab.values() if self._id_byte_lengths[i] == 1}
        # Code points whose UTF-8 bytes are all in the base alphabet; others cannot be encoded.
        encodable = np.array(
            [all(b in base for b in chr(c).encode("utf-8")) for c in range(self.max_code + 1)]
        )
        self._unencodable = None if encodable.all() else ~encodable
        self.backend, self.backend_note = self._select_backend(spec, backend)

    # ----------------------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | Path, *, backend: Backend = "auto") -> "FastTokenizer":
        """Reads ``processor_config.json`` + ``tokenizer.json`` from a directory: a local one, a shipped
        asset, a URL or a hub repo id ("org/name", fetched into the hub cache; ``kidata.locate``);
        never runs remote code."""
        from tokenizers import Tokenizer

        from kidata.locate import locate

        directory = locate(path, what="FAST tokenizer", kind="tokenizers",
                           hub_files=(PROCESSOR_CONFIG, TOKENIZER_FILE, KIDATA_FILE))
        config_path = directory / PROCESSOR_CONFIG
        tokenizer_path = directory / TOKENIZER_FILE
        for required in (config_path, tokenizer_path):
            if not required.is_file():
                raise FileNotFoundError(f"FAST tokenizer directory {directory} lacks {required.name}")
        config = json.loads(config_path.read_text())
        for key in ("scale", "min_token"):
            if key not in config:
                raise ValueError(f"{config_path}: missing key {key!r} (keys: {sorted(config)})")
        extras_path = directory / KIDATA_FILE
        extras = json.loads(extras_path.read_text()) if extras_path.is_file() else {}
        tokenizer = Tokenizer.from_str(tokenizer_path.read_text())
        known = {"scale", "min_token", "max_token", "time_horizon", "action_dim", "vocab_size"}
        return cls(
            tokenizer,
            scale=config["scale"],
            min_token=config["min_token"],
            max_token=config.get("max_token", extras.get("max_token")),
            time_horizon=config.get("time_horizon"),
            action_dim=config.get("action_dim"),
            backend=backend,
            extra_config={k: v for k, v in config.items() if k not in known},
            metadata=extras.get("metadata"),
        )

    def config(self) -> dict[str, Any]:
        """``processor_config.json`` content (the reference's keys, plus any it was loaded with)."""
        scale: float | int = int(self.scale) if self.scale.is_integer() else self.scale
        return {
            **self._extra_config,
            "action_dim": self.action_dim,
            "min_token": self.min_token,
            "scale": scale,
            "time_horizon": self.time_horizon,
            "vocab_size": self.vocab_size,
        }

    @property
    def max_token(self) -> int:
        """Largest rounded coefficient the tokenizer represents (larger ones are clipped)."""
        return self.min_token + self.max_code

    def save(self, path: str | Path) -> Path:
        """Writes the published layout (+ ``kidata_fast.json`` with the code range and fit notes)."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            # max_token: the clip range other tools' processor module applies (hf_processor.py)
            PROCESSOR_CONFIG: json.dumps({**self.config(), "max_token": self.max_token, **INTEROP_CONFIG},
                                         indent=2, sort_keys=True) + "\n",
            HF_PROCESSOR_FILE: (Path(__file__).with_name("hf_processor.py")).read_text(),
            TOKENIZER_FILE: self._json,
            "tokenizer_config.json": json.dumps(
                {"clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"},
                indent=2,
            )
            + "\n",
            "special_tokens_map.json": "{}\n",
            KIDATA_FILE: json.dumps(
                {"max_token": self.max_token, "metadata": self.metadata}, indent=2, sort_keys=True
            )
            + "\n",
        }
        for name, text in files.items():
            temporary = directory / f".{name}.tmp"
            temporary.write_text(text)
            temporary.replace(directory / name)
        return directory

    @property
    def sha256(self) -> str:
        """Identity of what decides the ids: config + BPE, stable across save/load."""
        digest = hashlib.sha256()
        deciding = {k: v for k, v in self.config().items() if k not in INTEROP_CONFIG}  # not the loader hints
        digest.update(json.dumps(deciding, sort_keys=True).encode())
        digest.update(self._json.encode())
        digest.update(str(self.max_token).encode())
        return digest.hexdigest()

    # ----------------------------------------------------------------------------- encode
    def coefficient_codes(self, chunks: np.ndarray | Sequence) -> tuple[np.ndarray, int]:
        """Code points [B, H * D] int64 (row-major over frequency, dimension) and the clip count."""
        batch = as_chunk_batch(chunks)
        rounded = np.rint(dct(batch, axis=1, norm="ortho") * self.scale)
        codes = rounded.reshape(batch.shape[0], -1) - self.min_token
        out_of_range = (codes < 0) | (codes > self.max_code)
        clipped = int(out_of_range.sum())
        if clipped:
            codes = np.clip(codes, 0, self.max_code)
        codes = codes.astype(np.int64)
        if self._unencodable is not None and self._unencodable[codes].any():
            bad = int(codes[self._unencodable[codes]][0]) + self.min_token
            raise ValueError(
                f"coefficient {bad} (rounded, scale {self.scale}) has a UTF-8 byte missing from "
                "this tokenizer's base vocabulary, so BPE would silently drop it; refit the "
                "tokenizer with `kidata fast fit`, whose vocabulary covers every byte"
            )
        return codes, clipped

    def encode_detailed(self, chunks: np.ndarray | Sequence) -> EncodeResult:
        codes, clipped = self.coefficient_codes(chunks)
        per_chunk = codes.shape[1]
        text = bytelevel.from_code_points(codes.reshape(-1))
        strings = [text[i : i + per_chunk] for i in range(0, len(text), per_chunk)]
        if self._ranked is not None:
            ids = [self._ranked.encode(s) for s in strings]
        else:
            ids = [encoding.ids for encoding in self._hf.encode_batch(strings, add_special_tokens=False)]
        return EncodeResult([np.asarray(row, dtype=np.int32) for row in ids], clipped)

    def encode(self, chunks: np.ndarray | Sequence) -> list[np.ndarray]:
        """Token ids (int32) for each normalized chunk [H, D] of ``chunks`` [B, H, D] or [H, D].

        Coefficients outside the representable range are clipped, counted and warned about.
        """
        result = self.encode_detailed(chunks)
        if result.clipped:
            warnings.warn(
                f"FAST encode clipped {result.clipped} DCT coefficient(s) to the representable "
                f"range [{self.min_token}, {self.max_token}] / scale {self.scale}: the input is "
                "outside what this tokenizer was fitted on (check normalization)",
                ClipWarning,
                stacklevel=2,
            )
        return result.tokens

    # ----------------------------------------------------------------------------- decode
    def decode(
        self,
        tokens: Sequence[Sequence[int]] | np.ndarray,
        *,
        horizon: int | None = None,
        dim: int | None = None,
        strict: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions float64 [B, H, D] and ok bool [B] from token id sequences.

        ``ok`` is False when a sequence is not exactly H * D valid coefficients; its actions then
        come from the relaxed decode described in the module docstring. ``strict`` raises instead.
        """
        horizon = horizon or self.time_horizon
        dim = dim or self.action_dim
        if not horizon or not dim:
            raise ValueError("decode needs horizon and dim (the tokenizer config does not fix them)")
        rows = as_token_lists(tokens)
        length = horizon * dim
        count = len(rows)
        # All sequences at once: one byte join, one UTF-8 decode per sequence (a broken sequence
        # must not swallow the next one's bytes), one code-point conversion.
        table = self._id_bytes  # the last entry, b"\xff", stands for ids outside the vocabulary
        flat = np.concatenate(rows) if count else np.zeros(0, dtype=np.int64)
        bad_ids = (flat < 0) | (flat >= len(table) - 1)
        if bad_ids.any():
            flat = np.where(bad_ids, len(table) - 1, flat)
        data = b"".join(map(table.__getitem__, flat.tolist()))
        token_ends = np.cumsum([len(row) for row in rows], dtype=np.int64)
        byte_offsets = np.concatenate([[0], np.cumsum(self._id_byte_lengths[flat])])
        byte_ends = byte_offsets[token_ends].tolist()
        byte_starts = [0, *byte_ends[:-1]]
        texts = [data[a:b].decode("utf-8", errors="replace") for a, b in zip(byte_starts, byte_ends)]
        symbol_counts = np.fromiter(map(len, texts), dtype=np.int64, count=count)
        codes = bytelevel.code_points("".join(texts)).astype(np.int64)
        invalid = codes > self.max_code  # includes U+FFFD from broken byte sequences and bad ids
        ok = symbol_counts == length
        if invalid.any():
            invalid_before = np.concatenate([[0], np.cumsum(invalid)])
            symbol_ends = np.cumsum(symbol_counts)
            ok &= invalid_before[symbol_ends] == invalid_before[symbol_ends - symbol_counts]
        if ok.all():
            coefficients = (codes + self.min_token).astype(np.float64).reshape(count, length)
        else:
            coefficients = self._relaxed_coefficients(codes, invalid, symbol_counts, ok, length)
            if strict:
                index = int(np.flatnonzero(~ok)[0])
                raise DecodeError(
                    f"sequence {index}: {symbol_counts[index]} coefficients for shape "
                    f"({horizon}, {dim}) (expected {length}); invalid symbols or ids outside the "
                    "vocabulary count as errors too"
                )
        scaled = coefficients.reshape(count, horizon, dim) / self.scale
        return idct(scaled, axis=1, norm="ortho"), ok

    def _relaxed_coefficients(
        self, codes: np.ndarray, invalid: np.ndarray, counts: np.ndarray, ok: np.ndarray, length: int
    ) -> np.ndarray:
        """Invalid symbols -> coefficient 0, then zero-pad or truncate each row to ``length``."""
        values = np.where(invalid, 0, codes + self.min_token).astype(np.float64)
        coefficients = np.zeros((len(counts), length), dtype=np.float64)
        start = 0
        for index, symbols in enumerate(counts.tolist()):
            kept = min(symbols, length)
            coefficients[index, :kept] = values[start : start + kept]
            start += symbols
        return coefficients

    # ----------------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        chunks: np.ndarray,
        *,
        vocab_size: int = 1024,
        scale: float = 10.0,
        target_rmse: float | None = None,
        min_frequency: int = 2,
        margin: int | None = None,
        show_progress: bool = False,
        backend: Backend = "auto",
    ) -> "FastTokenizer":
        """Fits the BPE on normalized chunks [N, H, D]; ``target_rmse`` picks the scale instead.

        The base alphabet is exactly the UTF-8 bytes of the code range the encoder can emit; merges
        fill the rest of ``vocab_size`` (fewer if the data has too few pairs of ``min_frequency``).
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        batch = as_chunk_batch(chunks)
        if target_rmse is not None:
            scale = scale_for_rmse(batch, target_rmse)
        rounded = np.rint(dct(batch, axis=1, norm="ortho") * scale).astype(np.int64)
        data_min, data_max = int(rounded.min()), int(rounded.max())
        span = data_max - data_min
        margin = default_margin(span, vocab_size) if margin is None else int(margin)
        if margin < 0:
            raise ValueError(f"margin must be >= 0 codes, got {margin}")
        if span + 2 * margin > bytelevel.MAX_CODE_POINT:
            raise ValueError(
                f"rounded DCT coefficients span {span} values at scale {scale} (+ {margin} margin codes on "
                f"each side), more than the {bytelevel.MAX_CODE_POINT} a byte-level vocabulary can "
                "represent: lower the scale or check that the chunks are normalized"
            )
        min_token = data_min - margin
        max_code = span + 2 * margin
        symbols = bytelevel.byte_to_symbol()
        alphabet = [symbols[b] for b in bytelevel.reachable_bytes(max_code)]
        if vocab_size < len(alphabet):
            raise ValueError(
                f"vocab_size {vocab_size} is smaller than the {len(alphabet)}-symbol byte alphabet of codes "
                f"0..{max_code} (training span {span} + {margin} margin codes on each side); choose a "
                f"vocab_size above {len(alphabet)} or a smaller margin (the BPE merges come on top of it)"
            )
        codes = (rounded.reshape(batch.shape[0], -1) - min_token).reshape(-1)
        text = bytelevel.from_code_points(codes)
        per_chunk = batch.shape[1] * batch.shape[2]
        tokenizer = Tokenizer(models.BPE())
        # No GPT-2 split: a chunk is one piece whatever its code points, so merges may span it all
        # and the codes can start at 0, where each is a single UTF-8 byte.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[],
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
        tokenizer.train_from_iterator(
            (text[i : i + per_chunk] for i in range(0, len(text), per_chunk)),
            trainer=trainer,
            length=batch.shape[0],
        )
        metadata = {
            "fitted_by": "kidata",
            "chunks": int(batch.shape[0]),
            "requested_vocab_size": int(vocab_size),
            "min_frequency": int(min_frequency),
            "margin": margin,
            "target_rmse": target_rmse,
        }
        return cls(
            tokenizer,
            scale=scale,
            min_token=min_token,
            max_token=min_token + max_code,
            time_horizon=int(batch.shape[1]),
            action_dim=int(batch.shape[2]),
            backend=backend,
            metadata=metadata,
        )

    # ----------------------------------------------------------------------------- backends
    def _select_backend(self, spec: dict[str, Any], backend: Backend) -> tuple[str, str]:
        self._ranked = None
        if backend == "hf":
            return "hf", "requested"
        ranked, reason = RankedBpe.build(spec, self.max_code)
        if ranked is None:
            if backend == "tiktoken":
                raise ValueError(f"tiktoken backend not possible: {reason}")
            return "hf", reason or ""
        mismatch = self._probe_mismatch(ranked)
        if mismatch is not None:
            if backend == "tiktoken":
                raise ValueError(f"tiktoken backend disagrees with tokenizers: {mismatch}")
            return "hf", mismatch
        self._ranked = ranked
        return "tiktoken", (
            f"ranks with a {ranked.chain_length}-merge chain applied up front; ids checked "
            "against tokenizers on probe chunks"
        )

    def _probe_mismatch(self, ranked: RankedBpe) -> str | None:
        """Compares the rank encoder with tokenizers on seeded smooth and noisy chunks."""
        rng = np.random.default_rng(0)
        strings: list[str] = []
        for horizon, dim in ((10, 7), (50, 14), (16, 14), (25, 1), (15, 32)):
            walk = np.cumsum(rng.normal(0.0, 0.1, (24, horizon, dim)), axis=1)
            noise = rng.uniform(-1.0, 1.0, (8, horizon, dim))
            for batch in (walk, noise):
                codes = np.rint(dct(batch, axis=1, norm="ortho") * self.scale).reshape(len(batch), -1)
                codes = np.clip(codes - self.min_token, 0, self.max_code).astype(np.int64)
                if self._unencodable is not None:
                    codes = np.where(self._unencodable[codes], 0, codes)
                strings.extend(bytelevel.from_code_points(row) for row in codes)
        expected = [e.ids for e in self._hf.encode_batch(strings, add_special_tokens=False)]
        for string, ids in zip(strings, expected):
            if ranked.encode(string) != ids:
                return f"probe string of {len(string)} symbols encodes differently"
        return None


def quantization_rmse(chunks: np.ndarray, scale: float) -> float:
    """RMSE in action space from rounding DCT coefficients at ``scale`` (the DCT is orthonormal)."""
    coefficients = dct(as_chunk_batch(chunks), axis=1, norm="ortho")
    error = coefficients - np.rint(coefficients * scale) / scale
    return float(np.sqrt(np.mean(error**2)))


def scale_for_rmse(chunks: np.ndarray, target_rmse: float, *, iterations: int = 40) -> float:
    """Smallest scale (fewest tokens) whose rounding RMSE on ``chunks`` is at most ``target_rmse``.

    Bisection in log-scale over [1e-2, 1e4]; the error shrinks as the scale grows.
    """
    if target_rmse <= 0:
        raise ValueError(f"target_rmse must be positive, got {target_rmse}")
    low, high = np.log(1e-2), np.log(1e4)
    if quantization_rmse(chunks, float(np.exp(high))) > target_rmse:
        raise ValueError(f"target_rmse {target_rmse} is below what scale 1e4 reaches")
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if quantization_rmse(chunks, float(np.exp(middle))) <= target_rmse:
            high = middle
        else:
            low = middle
    return float(np.exp(high))
