"""Weighted streaming of a built mixture into training samples (torch IterableDataset).

Design, so that every guarantee is a property of arithmetic rather than of timing:

* Consumers. Each (rank, dataloader worker) pair is consumer ``g = rank * workers + worker`` of
  ``G = world_size * workers``. In every epoch a source's shards are visited in a seeded order; with
  at least G shards consumer g reads the shards at positions g, g + G, ...; with fewer it reads
  them all and keeps samples g, g + G, ... Either way the consumers' streams are disjoint and none
  starves (no hang with one shard and many workers).
* Shuffling. A consumer's stream of a source is cut into blocks of ``shuffle_buffer`` samples and
  each block is permuted by a seeded permutation: a shuffle buffer whose state is a position.
* Mixing. Draw i of a consumer picks its source from a counter-based random number (seed,
  consumer, i), so the source of every draw is known without reading data.
* Resume. The state is the number of draws per consumer. Restoring recomputes how many samples
  each source gave (from the mixing draws) and seeks there (manifest sample counts locate the
  shard), so a resumed run sees exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from kidata.hashing import stable_seed_words
from kidata.manifest import BuildDir
from kidata.pipelines.shards import iter_tar, load_npy

_DRAW_BLOCK = 4096
# Samples whose image does not decode are skipped and counted; past this many in one source the
# run stops: the build is damaged, and `kidata verify` names the shards.
MAX_CORRUPT_SAMPLES = 100


def _open(url: str):
    import fsspec

    return fsspec.open(url, "rb").open()


class ShardError(ValueError):
    """A shard whose bytes contradict its manifest: names the shard, the sample and what differs."""


class CorruptImage(ValueError):
    """A sample's image that does not decode to the build's size: the sample is skipped, never fed."""


def shard_image(data: bytes, size: int, *, decode: bool = True):
    """A shard's JPEG as uint8 [size, size, 3] (or its bytes, ``decode=False``, after the header
    check alone). The build writes baseline RGB JPEGs of the mixture's image_size: anything else,
    and any JPEG libjpeg-turbo reports damaged (``strict``), is a CorruptImage, never garbage."""
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if (height, width) != (size, size):
            raise CorruptImage(f"{width}x{height} pixels, the build's images are {size}x{size}")
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True) if decode else data
    except CorruptImage:
        raise
    except (ValueError, TypeError) as error:
        raise CorruptImage(f"does not decode ({error})") from None


@dataclass(frozen=True)
class _SourcePlan:
    index: int
    name: str
    root: str
    shards: tuple[tuple[str, int], ...]  # (path, samples)
    vocab_size: int = 1 << 62  # token ids must lie in [0, vocab_size)
    max_tokens: int = 1 << 62
    sha256: Mapping[str, str] | None = None  # path -> sha256, checked on first open (verify_shards)


def check_members(plan: _SourcePlan, path: str, key: str, members: Mapping[str, bytes]) -> None:
    """The loader trusts no shard: a flipped bit in tokens.npy would become an id past the
    embedding table (an IndexError steps later, naming nothing). Checks each sample's token
    stream (integer ids inside the vocabulary, at most max_tokens, masks of the same length)."""
    where = f"shard {plan.root}/{path}, sample {key}"
    if "meta.json" not in members or "tokens.npy" not in members:
        raise ShardError(f"{where}: lacks meta.json or tokens.npy (members: {sorted(members)})")
    try:
        tokens = load_npy(members["tokens.npy"])
        masks = {name: load_npy(members[f"{name}.npy"]) for name in ("ar", "loss") if f"{name}.npy" in members}
    except Exception as error:  # noqa: BLE001 - any unreadable array is this shard's fault
        raise ShardError(f"{where}: unreadable array ({error}); run `kidata verify` on the build") from None
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or len(tokens) > plan.max_tokens:
        raise ShardError(f"{where}: tokens {tokens.dtype} {tokens.shape}, expected 1-D integers of at most "
                         f"{plan.max_tokens} (manifest max_tokens)")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= plan.vocab_size):
        bad = int(tokens.max()) if int(tokens.max()) >= plan.vocab_size else int(tokens.min())
        raise ShardError(f"{where}: token id {bad} outside the vocabulary [0, {plan.vocab_size}); "
                         "run `kidata verify` on the build")
    for name, mask in masks.items():
        if mask.shape != tokens.shape:
            raise ShardError(f"{where}: {name} mask {mask.shape} != tokens {tokens.shape}")


class _SourceStream:
    """One consumer's endless, block-shuffled stream of one source, seekable by position."""

    def __init__(self, plan: _SourcePlan, consumer: int, consumers: int, seed: int, block: int) -> None:
        total = sum(count for _, count in plan.shards)
        if total < consumers:  # fewer samples than consumers: disjointness is impossible, share them
            consumer, consumers = consumer % total, total
        self.plan, self.consumer, self.consumers, self.seed, self.block = plan, consumer, consumers, seed, block
        self.position = 0
        self._iterator: Iterator | None = None

    def _epoch_order(self, epoch: int) -> list[tuple[str, int, int | None]]:
        """(shard, samples, keep-residue or None) this consumer reads in an epoch, in order."""
        shards = list(self.plan.shards)
        order = np.random.default_rng(stable_seed_words(self.seed, self.plan.name, "epoch", epoch)).permutation(len(shards))
        shards = [shards[i] for i in order]
        if len(shards) >= self.consumers:
            return [(path, count, None) for path, count in shards[self.consumer :: self.consumers]]
        return [(path, count, self.consumer) for path, count in shards]

    def _epoch_length(self, epoch: int) -> int:
        total, seen = 0, 0
        for _, count, residue in self._epoch_order(epoch):
            if residue is None:
                total += count
            else:
                total += len(range((residue - seen) % self.consumers, count, self.consumers))
                seen += count
        return total

    def _ordered(self, epoch: int, skip: int) -> Iterator[tuple[str, dict, str]]:
        """The epoch's samples (key, members, shard path) for this consumer, unshuffled, starting at
        ``skip``."""
        seen = 0  # samples of the epoch's concatenated shards, for residue selection
        produced = 0
        for path, count, residue in self._epoch_order(epoch):
            mine = count if residue is None else len(range((residue - seen) % self.consumers, count, self.consumers))
            if produced + mine <= skip:
                produced += mine
                seen += count
                continue
            read = 0
            with _open(f"{self.plan.root}/{path}") as handle:
                if self.plan.sha256 is not None:
                    handle = _verified_shard(handle, self.plan, path)
                try:
                    for local, item in enumerate(iter_tar(handle)):
                        read += 1
                        if residue is not None and (seen + local) % self.consumers != residue:
                            continue
                        check_members(self.plan, path, *item)
                        if produced >= skip:
                            yield (*item, path)
                        produced += 1
                except ShardError:
                    raise
                except ValueError as error:  # iter_tar: a corrupt header, a truncated member
                    raise ShardError(f"shard {self.plan.root}/{path}: {error}; run `kidata verify` on the build") from None
            if read != count:
                raise ShardError(f"shard {self.plan.root}/{path} holds {read} samples, the manifest says {count} "
                                 "(truncated?); run `kidata verify` on the build")
            seen += count

    def _stream(self, start: int) -> Iterator[tuple[str, dict, str]]:
        epoch, offset = 0, start
        while True:
            length = self._epoch_length(epoch)
            if length == 0:
                raise ValueError(f"source {self.plan.name!r} has no samples for consumer {self.consumer}")
            if offset >= length:
                offset -= length
                epoch += 1
                continue
            block_start = offset - offset % self.block
            items = self._ordered(epoch, block_start)
            for first in range(block_start, length, self.block):
                chunk = [next(items) for _ in range(min(self.block, length - first))]
                seed = stable_seed_words(self.seed, self.plan.name, epoch, first, self.consumer)
                order = np.random.default_rng(seed).permutation(len(chunk))
                for index in range(len(chunk)):
                    if first + index >= offset:
                        yield chunk[order[index]]
            epoch, offset = epoch + 1, 0

    def seek(self, position: int) -> None:
        self.position = position
        self._iterator = None

    def next(self) -> tuple[str, dict, str]:
        """(key, members, shard path) of the stream's next sample."""
        if self._iterator is None:
            self._iterator = self._stream(self.position)
        self.position += 1
        return next(self._iterator)


@dataclass(frozen=True)
class MixtureSettings:
    """How a loader draws from a build: which split, the sources' weights (default: the manifest's;
    ``balance`` scales them by each source's sample count), the seed of the mixing and shuffling,
    the shuffle block (``shuffle_buffer`` samples), whether images are decoded to arrays or kept as
    JPEG bytes, whether each shard's sha256 is checked before use, and ``expect`` (what the caller
    requires of the build: ``Manifest.check_expectations``)."""

    split: str = "train"
    weights: Mapping[str, float] | None = None
    balance: bool = False
    seed: int = 0
    shuffle_buffer: int = 256
    decode_images: bool = True
    verify_shards: bool = False
    expect: Mapping[str, Any] | None = None


class MixtureDataset(torch.utils.data.IterableDataset):
    """Samples of a built mixture as dicts (decoded images, token/mask arrays, meta): ``build``'s
    shards drawn as ``settings`` say, the share of process ``rank`` of ``world_size``, images
    passed through ``augment`` (a callable (camera, image, rng) -> image) when set."""

    def __init__(self, build: BuildDir, settings: MixtureSettings = MixtureSettings(), *, rank: int = 0,
                 world_size: int = 1, augment: Any = None) -> None:
        super().__init__()
        self.manifest, root = build.read_manifest(), build.root
        if settings.expect:
            self.manifest.check_expectations(settings.expect)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        split, weights = settings.split, settings.weights
        self.split, self.seed, self.rank, self.world_size = split, settings.seed, rank, world_size
        self.shuffle_buffer, self.augment, self.decode_images = settings.shuffle_buffer, augment, settings.decode_images
        self.sources = self.manifest.source_names
        self.plans = []
        base = {}
        encoding = self.manifest.encoding
        for index, source in enumerate(self.manifest.sources):
            shards = tuple((s.path, s.samples) for s in source.split_shards(split))
            if shards:
                sums = {s.path: s.sha256 for s in source.shards} if settings.verify_shards else None
                self.plans.append(_SourcePlan(index, source.name, root, shards, encoding.token_vocab_size,
                                              encoding.max_tokens, sums))
                base[source.name] = source.weight * (sum(c for _, c in shards) if settings.balance else 1.0)
        if not self.plans:
            raise ValueError(f"no {split!r} shards in {build.manifest_path}")
        if weights is not None:
            unknown = set(weights) - set(base)
            if unknown:
                raise KeyError(f"weights for unknown sources {sorted(unknown)} (sources: {sorted(base)})")
            base = {name: float(weights.get(name, 0.0)) for name in base}
        for name, value in base.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"weight of source {name!r} is {value!r}; weights are finite numbers >= 0")
        total = sum(base.values())
        if total <= 0:
            raise ValueError("mixture weights sum to zero")
        self.weights = {name: value / total for name, value in base.items()}
        self._cumulative = np.cumsum([self.weights[p.name] for p in self.plans])
        self._start: dict[int, int] = {}
        self._consumed: dict[int, int] = {}
        self._rotation = 0
        self.corrupt_samples: dict[str, int] = {}  # source -> samples skipped for an image that does not decode

    # ------------------------------------------------------------ consumers and draws
    def _consumer(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # A resumed DataLoader starts with worker 0, but the next batch belongs to the worker whose
        # turn it was: the workers take over the consumers rotated by that offset.
        worker = (worker + self._rotation) % workers
        return self.rank * workers + worker, self.world_size * workers

    def _choices(self, consumer: int, start: int, count: int) -> np.ndarray:
        """Source plan indices of draws [start, start + count) of a consumer."""
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        parts = []
        for block in range(start // _DRAW_BLOCK, (start + count - 1) // _DRAW_BLOCK + 1):
            uniforms = np.random.default_rng(stable_seed_words(self.seed, "mix", consumer, block)).random(_DRAW_BLOCK)
            parts.append(np.searchsorted(self._cumulative, uniforms * self._cumulative[-1], side="right"))
        chosen = np.concatenate(parts)[start % _DRAW_BLOCK : start % _DRAW_BLOCK + count]
        return np.minimum(chosen, len(self.plans) - 1)

    def __iter__(self) -> Iterator[dict]:
        consumer, consumers = self._consumer()
        start = self._start.get(consumer, 0)
        streams = [_SourceStream(p, consumer, consumers, self.seed, self.shuffle_buffer) for p in self.plans]
        if start:
            past = np.bincount(self._choices(consumer, 0, start), minlength=len(self.plans))
            for stream, position in zip(streams, past):
                stream.seek(int(position))
        draw = start
        upcoming: list[int] = []
        while True:
            if not upcoming:
                upcoming = self._choices(consumer, draw, _DRAW_BLOCK - draw % _DRAW_BLOCK).tolist()[::-1]
            chosen = upcoming.pop()
            key, members, path = streams[chosen].next()
            plan = self.plans[chosen]
            try:
                sample = self._decode(plan, key, members, consumer, draw)
            except CorruptImage as error:
                sample = None
                self._skip_corrupt(plan, path, key, error)
            draw += 1
            self._consumed[consumer] = draw
            if sample is not None:
                yield sample

    def _skip_corrupt(self, plan: _SourcePlan, path: str, key: str, error: CorruptImage) -> None:
        """Counts a sample skipped for a corrupt image (``self.corrupt_samples``, per source), names
        it on stderr, and stops the run past ``MAX_CORRUPT_SAMPLES`` in one source."""
        count = self.corrupt_samples.get(plan.name, 0) + 1
        self.corrupt_samples[plan.name] = count
        print(f"loader: skipped sample {key} of shard {plan.root}/{path}: {error} ({count} skipped from source "
              f"{plan.name!r} so far)", file=sys.stderr)
        if count > MAX_CORRUPT_SAMPLES:
            raise ShardError(f"source {plan.name!r}: more than {MAX_CORRUPT_SAMPLES} samples with corrupt images "
                             f"(the last in shard {plan.root}/{path}); run `kidata verify` on the build")

    def _decode(self, plan: _SourcePlan, key: str, members: dict[str, bytes], consumer: int, draw: int) -> dict:
        meta = json.loads(members["meta.json"])
        sample: dict[str, Any] = {"__key__": key, "source": plan.name, "source_index": plan.index, "meta": meta,
                                  "draw": (consumer, draw)}
        for name in ("tokens", "ar", "loss", "state", "actions", "action_valid"):
            if f"{name}.npy" in members:
                sample[name] = load_npy(members[f"{name}.npy"])
        images = {}
        size = self.manifest.encoding.image_size
        for member, data in members.items():
            if member.endswith(".jpg"):
                try:
                    images[member[:-4]] = shard_image(data, size, decode=self.decode_images)
                except CorruptImage as error:
                    raise CorruptImage(f"{member} {error}") from None
        if self.augment is not None and self.decode_images:
            rng = np.random.default_rng(stable_seed_words(self.seed, "augment", consumer, draw))
            images = {camera: self.augment(camera, image, rng) for camera, image in images.items()}
        sample["images"] = images
        return sample

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Draws per consumer so far (in-process iteration, or set from the loader helper)."""
        return {"seed": self.seed, "world_size": self.world_size, "rank": self.rank,
                "draws": {str(k): v for k, v in sorted({**self._start, **self._consumed}.items())}}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("seed", self.seed) != self.seed or state.get("world_size", self.world_size) != self.world_size:
            raise ValueError("state was saved with a different seed or world size")
        self._start = {int(k): int(v) for k, v in state["draws"].items()}
        self._rotation = int(state.get("rotation", 0))
        self._consumed = {}

    def state_after_batches(self, batches: int, batch_size: int, num_workers: int) -> dict:
        """State after ``batches`` batches from a DataLoader with ``num_workers`` workers.

        torch's DataLoader takes batches from its workers in turn (in order), so worker w has
        produced ceil((batches - w) / num_workers) batches of this rank's stream.
        """
        workers = max(1, num_workers)
        draws = {}
        for worker in range(workers):
            # batch b of this loader came from worker b % workers, which served consumer (b + rotation) % workers
            consumer = (worker + self._rotation) % workers
            produced = max(0, -(-(batches - worker) // workers))
            key = self.rank * workers + consumer
            draws[str(key)] = self._start.get(key, 0) + produced * batch_size
        return {"seed": self.seed, "world_size": self.world_size, "rank": self.rank, "draws": draws,
                "rotation": (self._rotation + batches) % workers}



def _verified_shard(handle, plan: _SourcePlan, path: str):
    """The shard's bytes, checked against the manifest's sha256 before any sample is used."""
    import hashlib
    import io

    data = handle.read()
    if hashlib.sha256(data).hexdigest() != plan.sha256[path]:
        raise ShardError(f"shard {plan.root}/{path} does not match the manifest's sha256 (damaged or rewritten); "
                         "run `kidata verify` on the build")
    return io.BytesIO(data)
