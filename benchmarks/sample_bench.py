"""Robot sample building speed (tokenization only, images excluded), FAST (50, 8) chunks, one thread.

    python benchmarks/sample_bench.py [--samples 4000]

Prints samples/s of ``SampleEncoder.robot`` (text prompt + state bins + FAST + masks) next to its
floor in the same run: FAST encoding of the same chunks one at a time, which every sample needs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kidata import assets  # noqa: E402
from kidata.sources.synthetic import action_chunks  # noqa: E402
from kidata.tokenizers.fast import FastTokenizer  # noqa: E402
from kidata.tokenizers.prompt import SampleEncoder  # noqa: E402
from kidata.tokenizers.text import TextTokenizer  # noqa: E402

DEMO_TEXT = assets.ROOT / "tokenizers" / "demo-text"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4000)
    args = parser.parse_args()
    chunks = action_chunks(args.samples, 50, 8, seed=3)
    fast = FastTokenizer.fit(action_chunks(20_000, 50, 8, seed=4), vocab_size=1024)
    encoder = SampleEncoder(TextTokenizer.load(DEMO_TEXT), fast, max_tokens=512)
    states = np.random.default_rng(0).uniform(-1, 1, (args.samples, 8))
    valid = np.ones(50, dtype=bool)
    instructions = ["pick up the red block and put it in the basket", "open the top drawer"]

    def build():
        return [encoder.robot(instructions[i % 2], states[i], chunks[i], valid) for i in range(args.samples)]

    def floor():
        return [fast.encode(chunks[i]) for i in range(args.samples)]

    best = {"build": float("inf"), "floor": float("inf")}
    for _ in range(3):
        for name, function in (("build", build), ("floor", floor)):
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"kidata sample benchmark, {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"{args.samples} robot samples, FAST (50, 8) chunks, pi05 prompt, text state (8 dims), 1 thread")
    print(f"  build samples:           {args.samples / best['build']:9.0f} samples/s")
    print(f"  floor (FAST encode only): {args.samples / best['floor']:9.0f} chunks/s  "
          f"-> prompts, state and masks add {100 * (best['build'] / best['floor'] - 1):.0f}% on top")


if __name__ == "__main__":
    main()
