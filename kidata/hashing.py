"""Determinism by arithmetic: every split, shuffle, noise draw and sample choice in kidata is a
function of a sha256 of its coordinates ("/"-joined), never of timing or process order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def stable_digest(*parts: Any) -> bytes:
    """sha256 of the parts' strings joined by "/": the same on every machine and run."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def stable_fraction(*parts: Any) -> float:
    """A number in [0, 1) fixed by its inputs."""
    return int.from_bytes(stable_digest(*parts)[:8], "big") / 2**64


def holdout_rank(source: str, record_id: str) -> float:
    """The record's place in [0, 1) by the holdout hash: records under the fraction are held out."""
    return stable_fraction("holdout", source, record_id)


def in_holdout(source: str, record_id: str, fraction: float) -> bool:
    """Held-out by a hash of the source and record id only: the split never moves between builds."""
    return fraction > 0 and stable_fraction("holdout", source, record_id) < fraction


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed (``torch.Generator().manual_seed``) fixed by its inputs."""
    return int.from_bytes(stable_digest(*parts)[:8], "little")


def stable_seed_words(*parts: Any) -> list[int]:
    """Four 32-bit words (``numpy.random.default_rng``'s seed sequence) fixed by its inputs."""
    digest = stable_digest(*parts)
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def json_sha256(value: Any) -> str:
    """Hex sha256 of a JSON value with sorted keys: the identity of a recipe, config or tokenizer."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path, *, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()
