"""LeRobot source speed: build and pass 1 next to their floors, and PyAV next to torchcodec.

    python benchmarks/lerobot_bench.py [--episodes 24 --steps 60 --size 224 --repeat 3]

Writes a LeRobot v3.0 dataset of generated episodes (two 224x224 AV1 cameras, smooth moving content)
with ``kidata export lerobot``'s writer, then prints, best of --repeat interleaved runs:
* the build floor: decoding the same frames alone (PyAV, each episode's span) + resizing with padding
  + JPEG-encoding them at the output size, one process; and ``kidata build``'s per-worker steps/s with
  one worker (the dataset's steps over the seconds the worker spent inside units, pass 1 + pass 2,
  from build_report.json), as a share of that floor (goal >= 70%);
* pass 1: reading every episode without images through the reader (parquet columns, the per-episode
  checks and the mapping) next to reading the same parquet columns with pyarrow alone (goal >= 80%),
  and the statistics pass that consumes it;
* the decoders on ../shared/data/lerobot/bridge_v3 (when present): frames/s of kidata's PyAV path and
  of torchcodec (when installed; it needs the system's FFmpeg libraries), and how far each is from
  lerobot's own decoding recorded in bridge_v3.expected.json.
Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.recipes: the recipe builder the tests use
FIXTURE = REPO.parent / "shared" / "data" / "lerobot" / "bridge_v3"
MAPPING = {"cameras": {"base_0": "observation.images.base_0", "left_wrist_0": "observation.images.left_wrist_0"}}


def write_dataset(root: Path, episodes: int, steps: int, size: int, *, cameras: bool = True) -> Path:
    from kidata.pipelines.export_lerobot import export_lerobot
    from kidata.schema import Episode, Frames
    from kidata.sources.synthetic import minimum_jerk_episodes

    rng = np.random.default_rng(0)
    actions = minimum_jerk_episodes(episodes, steps, 6, seed=1).astype(np.float32)
    base = rng.integers(0, 255, (8, size // 8, size // 8, 3), dtype=np.uint8)

    def frames(index: int, shift: int) -> Frames:  # smooth, photo-like content that moves
        tile = base[(index + shift) % 8].repeat(8, axis=0).repeat(8, axis=1)
        return Frames(np.stack([np.roll(tile, step * 3 + shift, axis=1) for step in range(steps)]))

    made = (Episode(episode_id=f"e{index}", source="bench", state=actions[index], actions=actions[index],
                    instructions=("stack the blocks",), fps=10.0,
                    images={"base_0": frames(index, 0), "left_wrist_0": frames(index, 3)} if cameras else {})
            for index in range(episodes))
    return export_lerobot(made, root)


def recipe(path: Path, dataset: Path, size: int) -> Path:
    from support.recipes import RecipeDraft, source

    return RecipeDraft({"name": "bench", "action_horizon": 10, "image_size": size, "max_tokens": 256, "units_per_source": 2,
                        "fast_tokenizer": {"fit": True, "vocab_size": 512, "scale": 10.0}},
                       (source("bench", "lerobot", path=str(dataset), mapping=MAPPING),)).write(path)


def floor_seconds(dataset: Path, size: int) -> tuple[float, int]:
    """Decode every frame of every episode's span + resize with padding + JPEG-encode, one process."""
    from kidata.images import resize_with_pad
    from kidata.pipelines.shards import jpeg_bytes
    from kidata.sources.registry import open_source

    episodes = list(open_source("lerobot", path=str(dataset), mapping=MAPPING).episodes())
    start = time.perf_counter()
    for episode in episodes:
        for frames in episode.images.values():
            for step in range(len(frames)):
                jpeg_bytes(resize_with_pad(frames.frame(step), size), 95)
    return time.perf_counter() - start, sum(e.steps for e in episodes)


def build_cost(recipe_path: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "kidata.cli", "build", str(recipe_path), "--out", str(out), "--workers", "1",
                    "--quiet"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "build_report.json").read_text())["cost"]


def pass1_seconds(dataset: Path, rounds: int = 7) -> tuple[float, float, float, float]:
    """(reader without images, pyarrow alone on the same columns through ``pq.read_table``, the
    same through ``pq.ParquetFile.read`` (no dataset layer: the faster floor), kidata's statistics
    pass through the reader) seconds over the whole dataset: best of ``rounds`` interleaved rounds
    (each round runs the three reads back to back, so a noisy moment hits all)."""
    import pyarrow.parquet as pq

    from kidata.pipelines.stats import source_stats
    from kidata.sources.registry import open_source

    source = open_source("lerobot", path=str(dataset), mapping={"cameras": {}})
    columns = ["observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"]

    def arrow_alone(read) -> None:
        for file in sorted((dataset / "data").rglob("*.parquet")):
            table = read(file)
            for key in ("observation.state", "action"):
                table[key].combine_chunks().flatten().to_numpy()
            for key in columns[2:]:
                table[key].to_numpy()

    def timed(function) -> float:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    def through_dataset(file: Path):
        return pq.read_table(file, columns=columns)

    def through_file(file: Path):
        with pq.ParquetFile(file) as handle:
            return handle.read(columns=columns)

    reader = table = direct = float("inf")
    for _ in range(rounds):
        reader = min(reader, timed(lambda: list(source.episodes(images=False))))
        table = min(table, timed(lambda: arrow_alone(through_dataset)))
        direct = min(direct, timed(lambda: arrow_alone(through_file)))
    statistics = timed(lambda: source_stats(source, progress=False))
    return reader, table, direct, statistics


def decoder_comparison() -> list[str]:
    """PyAV (kidata) and torchcodec on the fixture: frames/s and distance from lerobot's decoding."""
    from kidata.sources.registry import open_source

    expected = json.loads(FIXTURE.with_name("bridge_v3.expected.json").read_text())
    mapping = {"cameras": {"base_0": "observation.images.image_0"}}
    episodes = list(open_source("lerobot", path=str(FIXTURE), mapping=mapping).episodes())
    start = time.perf_counter()
    pyav = [e.images["base_0"].array() for e in episodes]
    pyav_seconds = time.perf_counter() - start
    frames = sum(len(f) for f in pyav)
    checks = [c for c in expected["image_checks"] if c["camera"] == "observation.images.image_0"]

    def distance(decoded) -> float:
        return max(abs(decoded[c["episode_index"]][c["frame_index"]].reshape(-1, 3).mean(0) / 255.0
                       - np.array(c["lerobot_decoded_channel_means_01"])).max() for c in checks)

    lines = [f"  PyAV (kidata):  {frames / pyav_seconds:8.0f} frames/s; max |channel mean - lerobot's| "
             f"{distance(pyav):.1e}"]
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as error:  # noqa: BLE001 - absent, or present without the FFmpeg libraries
        lines.append(f"  torchcodec: not usable here ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
        return lines
    info = json.loads((FIXTURE / "meta" / "info.json").read_text())
    video = FIXTURE / info["video_path"].format(video_key="observation.images.image_0", chunk_index=0, file_index=0)
    start = time.perf_counter()
    decoded = []
    fps = float(info["fps"])
    for episode in episodes:  # as lerobot uses it: frame indices rounded from the timestamps
        decoder = VideoDecoder(str(video))
        indices = [round(t * fps) for t in episode.images["base_0"].timestamps.tolist()]
        batch = decoder.get_frames_at(indices=indices).data  # uint8 [T, 3, H, W]
        decoded.append(batch.permute(0, 2, 3, 1).numpy())
    torchcodec_seconds = time.perf_counter() - start
    same = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(pyav, decoded))
    lines.append(f"  torchcodec:     {frames / torchcodec_seconds:8.0f} frames/s; max |channel mean - lerobot's| "
                 f"{distance(decoded):.1e}; max pixel difference from PyAV {same}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pass1-episodes", type=int, default=200, help="pass 1's parquet-only dataset")
    parser.add_argument("--pass1-steps", type=int, default=200)
    args = parser.parse_args()
    print(f"kidata LeRobot benchmark, {platform.machine()}, {os.cpu_count()} cpus, python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        start = time.perf_counter()
        dataset = write_dataset(root / "data", args.episodes, args.steps, args.size)
        export_seconds = time.perf_counter() - start
        steps = args.episodes * args.steps
        recipe_path = recipe(root / "r.toml", dataset, args.size)
        parquet_only = write_dataset(root / "parquet", args.pass1_episodes, args.pass1_steps, args.size, cameras=False)
        floors, costs, pass1 = [], [], []
        for _ in range(args.repeat):
            floors.append(floor_seconds(dataset, args.size)[0])
            costs.append(build_cost(recipe_path, root / "out"))
            pass1.append(pass1_seconds(parquet_only))
        floor_rate = steps / min(floors)
        unit_seconds = min(c["pass1"]["job_seconds"] + c["pass2"]["job_seconds"] for c in costs)
        build_rate = steps / unit_seconds
        reader, table, direct, statistics = (min(p[i] for p in pass1) for i in range(4))
        print(f"dataset: {args.episodes} episodes x {args.steps} steps, two {args.size}x{args.size} AV1 cameras "
              f"({steps} steps); written by export_lerobot in {export_seconds:.1f} s ({steps / export_seconds:.0f} steps/s)")
        print(f"  floor (decode + resize + encode JPEG, 1 process): {floor_rate:8.1f} steps/s")
        print(f"  kidata build, 1 worker:                            {build_rate:8.1f} steps/s "
              f"({build_rate / floor_rate:.0%} of the floor; goal 70%)")
        pass1_steps = args.pass1_episodes * args.pass1_steps
        print(f"pass 1 on {args.pass1_episodes} episodes x {args.pass1_steps} steps (parquet only):")
        print(f"  reader (no images):                                {pass1_steps / reader:8.0f} steps/s")
        print(f"  pyarrow alone, same columns (pq.read_table):       {pass1_steps / table:8.0f} steps/s "
              f"(reader at {table / reader:.0%}; goal 80%)")
        print(f"  pyarrow alone, same columns (ParquetFile.read):    {pass1_steps / direct:8.0f} steps/s "
              f"(reader at {direct / reader:.0%}; goal 80%)")
        print(f"  the statistics pass through the reader:            {pass1_steps / statistics:8.0f} steps/s "
              f"(reading is {reader / statistics:.0%} of it)")
    if FIXTURE.is_dir():
        print("decoders on ../shared/data/lerobot/bridge_v3 (250 frames of 64x64 AV1):")
        for line in decoder_comparison():
            print(line)


if __name__ == "__main__":
    main()
