"""Serving overhead: round-trip latency of ``kidata serve`` over loopback (openpi-client's
protocol) next to in-process ``Policy.sample_actions`` on the same observation, in the same run.

    python benchmarks/serve_bench.py [--requests 50]

Builds a small Bridge mixture (the ../shared fixture, 96 px, 2 cameras), trains the tiny preset
for one step (weights do not change the cost), then times both paths interleaved, best and
median of --requests each. Goal: serving overhead <= 15% of the in-process time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # support.recipes: the recipe builder the tests use
BRIDGE = REPO.parent / "shared" / "data" / "rlds" / "bridge_dataset" / "1.0.0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    import torch
    from support.recipes import RecipeDraft, source

    from kidata import policy as policies
    from kidata.pipelines import load_recipe
    from kidata.pipelines.build import build
    from kidata.serving.client import RemotePolicy
    from kidata.serving.keymaps import PRESETS
    from kidata.serving.server import PolicyServer, run_metadata
    from kidata.training import train
    from kidata.training.config import load

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        RecipeDraft({"name": "serve-bench", "image_size": 96, "holdout": 0.0, "units_per_source": 1,
                     "fast_tokenizer": {"fit": True, "vocab_size": 512, "scale": 10.0}},
                    (source("bridge", "rlds", path=str(BRIDGE), dataset="bridge_dataset"),)).write(root / "r.toml")
        build(load_recipe(root / "r.toml"), str(root / "mix"), progress=False)
        config = load("ki_tiny", {"data": {"manifest": root / "mix" / "manifest.json", "cameras": ["base_0", "base_1"]},
                                  "train": {"steps": 1}, "eval": {"every": 0}, "log": {"progress": False}})
        train(config, root / "run")
        policy = policies.load(root / "run")
        server = PolicyServer(policy, PRESETS["kidata"], metadata=run_metadata(policy, root / "run"))
        port = server.start("127.0.0.1", 0)
        remote = RemotePolicy(f"ws://127.0.0.1:{port}")
        rng = np.random.default_rng(0)
        observation = {"images": {"base_0": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
                                  "base_1": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)},
                       "state": rng.normal(size=7), "prompt": "put the spoon in the pot"}
        local_times, remote_times = [], []
        for _ in range(3):  # warm-up of both paths
            policy.sample_actions(observation), remote.sample_actions(observation)
        for _ in range(args.requests):
            began = time.perf_counter()
            policy.sample_actions(observation)
            local_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            remote.sample_actions(observation)
            remote_times.append(time.perf_counter() - began)
        remote.close()
        server.shutdown()
    for name, times in (("in-process sample_actions", local_times), ("served round trip", remote_times)):
        print(f"{name:28s} best {min(times) * 1000:7.2f} ms, median {statistics.median(times) * 1000:7.2f} ms")
    print(f"serving overhead: best {min(remote_times) / min(local_times) - 1:+.1%}, median "
          f"{statistics.median(remote_times) / statistics.median(local_times) - 1:+.1%} (goal <= +15%)")


if __name__ == "__main__":
    main()
