"""FAST fit compactness: kidata's ``FastTokenizer.fit`` next to the published fit, same data.

    python benchmarks/fast_fit_bench.py [--vocab 128 256 512 1024 2048] [--quick]

For every dataset of the benchmark set and every vocabulary size, both fits see the same
normalized training chunks at the same scale (10); the table gives held-out tokens per chunk
(published vs kidata), the decoding RMSE of each (identical unless a side clips or drops
coefficients), kidata's held-out clip count and both fit times. The published fit is
``kidata.tokenizers.reference.reference_fit`` (the universal processor's ``fit`` algorithm), run
in this same process. Datasets:

* Meta-World scripted experts (reach, push, button-press-topdown; the demo recipe's source),
  chunks (10, 4); held-out episodes from another seed.
* Bridge, the 25 + 25 real episodes in ../shared (train fits, val is held out), chunks (4, 7).
* The DROID-layout and LIBERO-layout episodes of the test fixtures (tests/support/rlds.py),
  chunks (15, 7) and (10, 7); held-out episodes are other fixture episodes.
* Generated smooth (minimum-jerk) and noisy (uniform) chunks of (10, 4), (50, 7), (50, 14).

Chunks are normalized the way builds normalize them (quantile statistics of the training
episodes mapped to [-1, 1]). Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from kidata.normalize import normalize
from kidata.pipelines.stats import EpisodeStats
from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer
from kidata.tokenizers.reference import reference_decode, reference_encode, reference_fit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCALE = 10.0


def _windows(actions: np.ndarray, horizon: int) -> np.ndarray:
    """Every chunk of an episode [T, D] as builds cut them: [T, H, D], the last action repeated."""
    index = np.minimum(np.arange(len(actions))[:, None] + np.arange(horizon)[None], len(actions) - 1)
    return actions[index]


def episode_chunks(train: Iterable[np.ndarray], heldout: Iterable[np.ndarray], horizon: int):
    """Normalized (train, held-out) chunks from raw episode actions, statistics from train only."""
    train, heldout = list(train), list(heldout)
    stats = EpisodeStats()
    for actions in train:
        stats.add(np.zeros((len(actions), 1), np.float32), actions)
    action_stats = stats.finalize().actions
    cut = lambda episodes: np.concatenate([_windows(a, horizon) for a in episodes])  # noqa: E731
    return normalize(cut(train), action_stats), normalize(cut(heldout), action_stats)


def metaworld(quick: bool):
    from kidata.sources.metaworld import MetaWorldSource

    tasks = ["reach", "push", "button-press-topdown"]
    per_task = 8 if quick else 25

    def actions(seed: int, count: int) -> list[np.ndarray]:
        source = MetaWorldSource(tasks, episodes_per_task=count, seed=seed, max_steps=200)
        return [e.actions for e in source.episodes(images=False)]

    return episode_chunks(actions(0, per_task), actions(1, max(per_task // 2, 4)), horizon=10)


def bridge(quick: bool):
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    path = str(SHARED / "data" / "rlds" / "bridge_dataset" / "1.0.0")
    split = lambda name: [e.actions for e in RldsSource(path, lookup("bridge_dataset"), split=name)  # noqa: E731
                          .episodes(images=False)]
    return episode_chunks(split("train"), split("val"), horizon=4)


def _fixtures():
    sys.path.insert(0, str(ROOT / "tests"))
    from support import rlds as rlds_fixtures

    rlds_fixtures.DROID_IMAGE = (1, 1, 3)  # actions only: skip generating camera frames
    return rlds_fixtures


def droid_layout(quick: bool):
    fixtures = _fixtures()
    steps = lambda index: 20 + (index * 7) % 41  # noqa: E731  (episodes of 20-60 steps)
    episode = lambda index: np.stack([s["action"] for s in fixtures.droid_episode(index, steps(index))["steps"]])  # noqa: E731
    count = 12 if quick else 40
    return episode_chunks(map(episode, range(count)), map(episode, range(count, count + count // 4)), horizon=15)


def libero_layout(quick: bool):
    fixtures = _fixtures()

    def episode(seed: int) -> np.ndarray:
        demo = fixtures.raw_libero_demo(seed, 40 + seed % 20, image_shape=(1, 1, 3))
        return demo["actions"][demo["keep"]].astype(np.float64)

    count = 12 if quick else 60
    return episode_chunks(map(episode, range(count)), map(episode, range(1000, 1000 + count // 4)), horizon=10)


def synthetic(kind: str, horizon: int, dim: int) -> Callable[[bool], tuple[np.ndarray, np.ndarray]]:
    def make(quick: bool):
        count = 2000 if quick else 8000
        if kind == "smooth":
            chunks = action_chunks(count + count // 4, horizon, dim, seed=7)
        else:
            chunks = np.random.default_rng(7).uniform(-1.0, 1.0, (count + count // 4, horizon, dim))
        return chunks[:count], chunks[count:]

    return make


DATASETS: dict[str, Callable[[bool], tuple[np.ndarray, np.ndarray]]] = {
    "Meta-World experts (10, 4)": metaworld,
    "Bridge, 25 episodes (4, 7)": bridge,
    "DROID layout (15, 7)": droid_layout,
    "LIBERO layout (10, 7)": libero_layout,
    **{f"{kind} {shape}": synthetic(kind, *shape)
       for kind in ("smooth", "noisy") for shape in ((10, 4), (50, 7), (50, 14))},
}


def published_row(train, heldout, vocab_size):
    """(tokens per held-out chunk, RMSE, fit seconds) of the published fit, or None if it refuses."""
    start = time.perf_counter()
    try:
        tokenizer, min_token = reference_fit(train, scale=SCALE, vocab_size=vocab_size)
    except ValueError:
        return None
    seconds = time.perf_counter() - start
    horizon, dim = train.shape[1:]
    ids = [reference_encode(tokenizer, chunk, scale=SCALE, min_token=min_token) for chunk in heldout]
    decoded = np.stack([reference_decode(tokenizer, row, scale=SCALE, min_token=min_token, horizon=horizon, dim=dim)
                        for row in ids])
    return np.mean([len(row) for row in ids]), float(np.sqrt(np.mean((decoded - heldout) ** 2))), seconds


def kidata_row(train, heldout, vocab_size, margin=None, min_frequency=2):
    """(tokens per held-out chunk, RMSE, fit seconds, clipped coefficients) of kidata's fit, or None."""
    start = time.perf_counter()
    try:
        tokenizer = FastTokenizer.fit(train, vocab_size=vocab_size, scale=SCALE, margin=margin,
                                      min_frequency=min_frequency)
    except ValueError:
        return None
    seconds = time.perf_counter() - start
    result = tokenizer.encode_detailed(heldout)
    decoded, ok = tokenizer.decode(result.tokens)
    return (np.mean([len(row) for row in result.tokens]), float(np.sqrt(np.mean((decoded - heldout) ** 2))),
            seconds, result.clipped, int((~ok).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--quick", action="store_true", help="fewer episodes and chunks (a smoke run)")
    parser.add_argument("--margin", type=int, help="codes beyond the training range (default: the fit's rule)")
    parser.add_argument("--min-frequency", type=int, default=2, help="kidata's least count for a merge (published: 2)")
    parser.add_argument("--only", nargs="*", help="dataset names containing one of these words")
    args = parser.parse_args()
    print(f"kidata FAST fit benchmark, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, python {platform.python_version()}; scale {SCALE}")
    print("| data (train / held-out chunks) | vocab | tokens/chunk published | kidata | ratio | "
          "RMSE published | kidata | kidata clipped | fit s published | kidata |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worse = []
    for name, make in DATASETS.items():
        if args.only and not any(word.lower() in name.lower() for word in args.only):
            continue
        if name.startswith("Bridge") and not (SHARED / "data" / "rlds").is_dir():
            print(f"| {name} | skipped: ../shared/data/rlds is absent |")
            continue
        train, heldout = make(args.quick)
        for vocab_size in args.vocab:
            published = published_row(train, heldout, vocab_size)
            ours = kidata_row(train, heldout, vocab_size, args.margin, args.min_frequency)
            label = f"{name} ({len(train)} / {len(heldout)})"
            cells = ["refused", "", ""] if published is None else [f"{published[0]:.2f}", f"{published[1]:.4f}", f"{published[2]:.1f}"]
            mine = ["refused", "", "", ""] if ours is None else [f"{ours[0]:.2f}", f"{ours[1]:.4f}", f"{ours[2]:.1f}", str(ours[3])]
            ratio = f"{ours[0] / published[0]:.3f}" if published and ours else ""
            print(f"| {label} | {vocab_size} | {cells[0]} | **{mine[0]}** | {ratio} | {cells[1]} | {mine[1]} | "
                  f"{mine[3]} | {cells[2]} | {mine[2]} |", flush=True)
            if published and (ours is None or ours[0] > published[0] + 1e-9):
                worse.append(f"{name} at vocab {vocab_size}")
    print("kidata at least as compact on every row" if not worse else "kidata LESS compact on: " + "; ".join(worse))


if __name__ == "__main__":
    main()
