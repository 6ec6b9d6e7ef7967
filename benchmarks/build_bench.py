"""Build speed and memory on a generated 224x224 two-camera RLDS dataset.

    python benchmarks/build_bench.py [--episodes 16 --steps 50]

Prints, in one run:
* steps/s of a whole ``kidata build`` (pass 1, FAST fit, pass 2) with 1 and with 2 worker
  processes, next to the floor: decoding the source JPEGs, resizing with padding and encoding the
  output JPEGs for the same images in one process, nothing else;
* peak RSS of a build and of a statistics pass at two dataset sizes 4x apart (each in a fresh
  subprocess), which must not grow with the dataset (workers stream episodes; sketches are bounded).
Record results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE = (224, 224, 3)


def write_dataset(root: Path, episodes: int, steps: int) -> Path:
    import tensorflow_datasets as tfds

    from kidata.sources.synthetic import minimum_jerk_episodes

    features = tfds.features.FeaturesDict({"steps": tfds.features.Dataset({
        "observation": tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE, encoding_format="jpeg"),
            "wrist_image": tfds.features.Image(shape=IMAGE, encoding_format="jpeg"),
            "state": tfds.features.Tensor(shape=(8,), dtype=np.float32)}),
        "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
        "language_instruction": tfds.features.Text()})})
    rng = np.random.default_rng(0)
    actions = minimum_jerk_episodes(episodes, steps, 6, seed=1).astype(np.float32)
    base = rng.integers(0, 255, (8, 28, 28, 3), dtype=np.uint8)

    def frame(seed: int) -> np.ndarray:  # smooth, photo-like content (JPEG of noise is atypical)
        tile = base[seed % 8].repeat(8, axis=0).repeat(8, axis=1)
        return np.roll(tile, seed % 37, axis=1)

    data = [(index, {"steps": [{
        "observation": {"image": frame(index * steps + t), "wrist_image": frame(index * steps + t + 3),
                        "state": np.concatenate([actions[index, t], [0.0]]).astype(np.float32)},
        "action": actions[index, t], "language_instruction": "stack the blocks"} for t in range(steps)]})
        for index in range(episodes)]
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="bench", version="1.0.0", features=features, split_datasets={"train": data}, data_dir=str(root),
        disable_shuffling=True)
    return Path(builder.data_dir)


def recipe(path: Path, dataset: Path) -> Path:
    path.write_text(f"""
[mixture]
name = "bench"
action_horizon = 10
image_size = 224
max_tokens = 256
units_per_source = 2
fast_tokenizer = {{ fit = true, vocab_size = 512, scale = 10.0 }}

[[sources]]
name = "bench"
reader = "rlds"
path = "{dataset}"
mapping = {{ cameras = {{ base_0 = "image", left_wrist_0 = "wrist_image" }}, state = ["observation/state"], action = ["action"], fps = 10 }}
""")
    return path


def floor_seconds(dataset: Path) -> tuple[float, int]:
    """Decode source JPEG + resize with padding + encode JPEG, for every image of the dataset."""
    from kidata.pipelines.shards import jpeg_bytes
    from kidata.sources.images import resize_with_pad
    from kidata.sources.rlds import RldsSource
    from kidata.sources.spec import spec_from_mapping

    spec = spec_from_mapping("bench", {"cameras": {"base_0": "image", "left_wrist_0": "wrist_image"},
                                       "state": ["observation/state"], "action": ["action"], "fps": 10})
    frames = [f for e in RldsSource(str(dataset), spec).episodes() for f in e.images.values()]
    steps = len(frames[0]) * len(frames) // 2
    start = time.perf_counter()
    for camera in frames:
        for step in range(len(camera)):
            jpeg_bytes(resize_with_pad(camera.frame(step), 224), 95)
    return time.perf_counter() - start, steps


def run(command: list[str]) -> float:
    """Wall seconds of a command."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    kidata = [sys.executable, "-m", "kidata.cli"]
    print(f"kidata build benchmark, {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        small = write_dataset(root / "small", args.episodes, args.steps)
        large = write_dataset(root / "large", args.episodes * 4, args.steps)
        floor, steps = floor_seconds(small)
        print(f"dataset: {args.episodes} episodes x {args.steps} steps, two 224x224 JPEG cameras ({steps} steps)")
        print(f"  floor (decode + resize + encode JPEG, 1 process): {steps / floor:8.1f} steps/s")
        timings, marginal = {}, {}
        for workers in (1, 2):
            seconds = run(kidata + ["build", str(recipe(root / "r.toml", small)), "--out", str(root / f"out{workers}"),
                                       "--workers", str(workers), "--quiet"])
            larger = run(kidata + ["build", str(recipe(root / "r4.toml", large)), "--out", str(root / f"big{workers}"),
                                      "--workers", str(workers), "--quiet"])
            timings[workers] = seconds
            # the steps the 4x dataset adds over the 1x one, per added second: start-up, imports and
            # per-unit pipeline construction cancel out
            marginal[workers] = 3 * steps / (larger - seconds)
            print(f"  kidata build, {workers} worker(s), whole command:   {steps / seconds:8.1f} steps/s "
                  f"({steps / seconds / (steps / floor) * 100:.0f}% of the floor)")
            print(f"  kidata build, {workers} worker(s), marginal (4x - 1x): {marginal[workers]:6.1f} steps/s "
                  f"({marginal[workers] / (steps / floor) * 100:.0f}% of the floor)")
        print(f"  speed-up with 2 workers: {timings[1] / timings[2]:.2f}x whole command, "
              f"{marginal[2] / marginal[1]:.2f}x marginal")
        rss = {}
        mapping = root / "mapping.json"
        mapping.write_text(json.dumps({"cameras": {"base_0": "image"}, "state": ["observation/state"],
                                       "action": ["action"], "fps": 10}))
        for label, dataset in (("1x", small), ("4x", large)):
            # RUSAGE_CHILDREN keeps the maximum over all children so far: measure each in its own shell
            probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                     "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            build_rss = int(subprocess.run([sys.executable, "-c", probe, *kidata, "build", str(recipe(root / f"m{label}.toml", dataset)),
                                            "--out", str(root / f"mem{label}"), "--quiet"], capture_output=True, text=True,
                                           check=True).stdout.split()[-1]) / 1024
            stats_rss = int(subprocess.run([sys.executable, "-c", probe, *kidata, "stats", "--reader", "rlds", "--path",
                                            str(dataset), "--mapping", str(mapping), "--quiet"],
                                           capture_output=True, text=True, check=True).stdout.split()[-1]) / 1024
            rss[label] = (build_rss, stats_rss)
        print(f"peak RSS, build:       {rss['1x'][0]:7.0f} MiB at 1x, {rss['4x'][0]:7.0f} MiB at 4x "
              f"({(rss['4x'][0] / rss['1x'][0] - 1) * 100:+.1f}%)")
        print(f"peak RSS, stats pass:  {rss['1x'][1]:7.0f} MiB at 1x, {rss['4x'][1]:7.0f} MiB at 4x "
              f"({(rss['4x'][1] / rss['1x'][1] - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
