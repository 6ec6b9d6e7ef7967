"""How well an action tokenizer fits a set of chunks: length, compression, reconstruction, clipping.

Used by ``kidata fast fit`` / ``kidata fast report`` and by builds (next to the manifest). Writes a
JSON report plus PNG plots people would rather look at than numbers.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kidata.tokenizers.base import ClipWarning, as_chunk_batch
from kidata.tokenizers.bins import BinTokenizer
from kidata.tokenizers.fast import FastTokenizer


@dataclass
class TokenizerReport:
    chunks: int
    horizon: int
    dim: int
    vocab_size: int
    scale: float
    tokens_mean: float
    tokens_p50: float
    tokens_p99: float
    tokens_max: int
    naive_tokens: int  # one 256-bin token per step and dimension
    compression: float  # naive_tokens / tokens_mean
    rmse: float
    rmse_per_dim: list[float]
    max_abs_error: float
    naive_rmse_per_dim: list[float]
    clipped_values: int
    decode_failures: int
    token_counts: list[int] = field(repr=False, default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("token_counts")
        values, counts = np.unique(self.token_counts, return_counts=True)
        data["token_count_histogram"] = {str(v): int(c) for v, c in zip(values, counts)}
        return data

    def summary(self) -> str:
        lines = [
            f"chunks {self.chunks} of shape ({self.horizon}, {self.dim}); vocab {self.vocab_size}, "
            f"scale {self.scale:g}",
            f"tokens per chunk: mean {self.tokens_mean:.1f}  p50 {self.tokens_p50:.0f}  "
            f"p99 {self.tokens_p99:.0f}  max {self.tokens_max}",
            f"compression vs naive binning ({self.naive_tokens} tokens): {self.compression:.2f}x",
            f"reconstruction RMSE {self.rmse:.5f} (max abs error {self.max_abs_error:.4f}); "
            f"clipped values {self.clipped_values}; decode failures {self.decode_failures}",
            "dim  FAST rmse   naive-256 rmse",
        ]
        for index, (ours, naive) in enumerate(zip(self.rmse_per_dim, self.naive_rmse_per_dim)):
            lines.append(f"{index:>3}  {ours:.5f}     {naive:.5f}")
        return "\n".join(lines)


def measure_tokenizer(
    tokenizer: FastTokenizer,
    chunks: np.ndarray,
    *,
    batch_size: int = 4096,
    progress: bool = False,
) -> TokenizerReport:
    """Encodes and decodes ``chunks`` [N, H, D] in batches and measures what came back."""
    from kidata.progress import bar

    count, horizon, dim = np.shape(chunks)
    squared = np.zeros(dim)
    naive_squared = np.zeros(dim)
    max_error = 0.0
    clipped = 0
    failures = 0
    lengths: list[int] = []
    naive = BinTokenizer()
    starts = range(0, count, batch_size)
    for start in bar(starts, desc="encode/decode", unit="batch", disable=not progress):
        batch = as_chunk_batch(chunks[start : start + batch_size])
        result = tokenizer.encode_detailed(batch)
        clipped += result.clipped
        lengths.extend(len(ids) for ids in result.tokens)
        decoded, ok = tokenizer.decode(result.tokens, horizon=horizon, dim=dim)
        failures += int((~ok).sum())
        error = decoded - batch
        squared += (error**2).sum(axis=(0, 1))
        max_error = max(max_error, float(np.abs(error).max()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClipWarning)
            naive_decoded, _ = naive.decode(naive.encode(batch), horizon=horizon, dim=dim)
        naive_squared += ((naive_decoded - batch) ** 2).sum(axis=(0, 1))
    token_counts = np.asarray(lengths)
    rmse_per_dim = np.sqrt(squared / (count * horizon))
    return TokenizerReport(
        chunks=int(count),
        horizon=int(horizon),
        dim=int(dim),
        vocab_size=tokenizer.vocab_size,
        scale=tokenizer.scale,
        tokens_mean=float(token_counts.mean()),
        tokens_p50=float(np.percentile(token_counts, 50)),
        tokens_p99=float(np.percentile(token_counts, 99)),
        tokens_max=int(token_counts.max()),
        naive_tokens=int(horizon * dim),
        compression=float(horizon * dim / token_counts.mean()),
        rmse=float(np.sqrt(squared.sum() / (count * horizon * dim))),
        rmse_per_dim=rmse_per_dim.tolist(),
        max_abs_error=max_error,
        naive_rmse_per_dim=np.sqrt(naive_squared / (count * horizon)).tolist(),
        clipped_values=clipped,
        decode_failures=failures,
        token_counts=token_counts.tolist(),
    )


def write_report(report: TokenizerReport, out_dir: str | Path) -> Path:
    """Writes report.json, token_histogram.png and reconstruction_error.png into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(report.token_counts, bins=min(60, max(5, len(set(report.token_counts)))))
    axis.axvline(report.tokens_mean, color="k", linestyle="--", label=f"mean {report.tokens_mean:.1f}")
    axis.set_xlabel("tokens per chunk")
    axis.set_ylabel("chunks")
    axis.set_title(f"FAST tokens per ({report.horizon}, {report.dim}) chunk")
    axis.legend()
    figure.tight_layout()
    figure.savefig(directory / "token_histogram.png", dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    positions = np.arange(report.dim)
    axis.bar(positions - 0.2, report.rmse_per_dim, width=0.4, label="FAST")
    axis.bar(positions + 0.2, report.naive_rmse_per_dim, width=0.4, label="naive 256 bins")
    axis.set_xlabel("action dimension")
    axis.set_ylabel("reconstruction RMSE")
    axis.set_title("reconstruction error per dimension")
    axis.legend()
    figure.tight_layout()
    figure.savefig(directory / "reconstruction_error.png", dpi=100)
    plt.close(figure)
    return directory
