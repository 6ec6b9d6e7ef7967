"""Statistics pass speed: steps/s of ``source_stats`` next to plainly iterating the tfrecords.

    python benchmarks/stats_bench.py [--episodes 200 --steps 40]

Two datasets: the real Bridge fixture in ../shared (25 episodes, 64x64 images) and a generated
DROID-layout dataset (3 cameras at 180x320 JPEG) written with tfds into a temporary folder. The
floor is reading every tfrecord record without parsing (tf.data.TFRecordDataset): the statistics
pass cannot be faster than reading the bytes. Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kidata.pipelines.stats import source_stats  # noqa: E402
from kidata.sources.datasets.droid import droid_spec  # noqa: E402
from kidata.sources.registry import lookup  # noqa: E402
from kidata.sources.rlds import RldsSource  # noqa: E402

BRIDGE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rlds" / "bridge_dataset" / "1.0.0"


def raw_read_seconds(path: Path) -> float:
    import tensorflow as tf

    files = sorted(str(p) for p in path.glob("*.tfrecord*"))
    start = time.perf_counter()
    for _ in tf.data.TFRecordDataset(files):
        pass
    return time.perf_counter() - start


def best_stats_seconds(source: RldsSource, **delta) -> tuple[float, object]:
    best, stats = None, None
    for _ in range(3):
        start = time.perf_counter()
        stats, _ = source_stats(source, workers=1, progress=False, **delta)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, stats


def measure(label: str, source: RldsSource, path: Path, delta_horizons: tuple[int, ...] = ()) -> None:
    raw_read_seconds(path)  # warm the file cache and TensorFlow
    raw = min(raw_read_seconds(path) for _ in range(3))
    best, stats = best_stats_seconds(source)
    steps = stats.actions.sketch.count
    print(f"{label}: {stats.episodes} episodes, {steps} steps")
    print(f"  stats pass (1 process): {steps / best:10.0f} steps/s  ({best:.2f} s)")
    print(f"  raw tfrecord read:      {steps / raw:10.0f} steps/s  ({raw:.2f} s)  -> stats pass takes {best / raw:.1f}x the raw read")
    for horizon in delta_horizons:  # delta actions: statistics over every valid position of every step's chunk
        mask = [True] * (stats.actions.dims - 1) + [False]
        seconds, relative = best_stats_seconds(source, delta_mask=mask, horizon=horizon)
        print(f"  delta actions, H={horizon:<3}   {steps / seconds:10.0f} steps/s  ({seconds:.2f} s, "
              f"{relative.actions.sketch.count} chunk rows)  -> {seconds / best:.1f}x the plain stats pass")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--delta-horizons", type=int, nargs="*", default=[10, 50],
                        help="also time delta-action statistics over chunks of these lengths (DROID layout)")
    args = parser.parse_args()
    print(f"kidata stats benchmark, {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    if BRIDGE.is_dir():
        measure("Bridge fixture", RldsSource(str(BRIDGE), lookup("bridge_dataset")), BRIDGE)
    from support import rlds as fx

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = fx.write_dataset(Path(root), "droid_100", fx.droid_features(),
                                {"train": [fx.droid_episode(i, args.steps) for i in range(args.episodes)]})
        print(f"(generated {args.episodes} DROID-layout episodes in {time.perf_counter() - start:.0f} s)")
        measure("generated DROID layout", RldsSource(str(path), droid_spec("joint_position", name="droid_100")), path,
                tuple(args.delta_horizons))


if __name__ == "__main__":
    main()
