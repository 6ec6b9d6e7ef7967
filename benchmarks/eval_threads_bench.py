"""Closed-loop evaluation threads: ``evaluate_metaworld`` on a trained run with the policy inferring on
torch's default thread count (one per core) next to one thread (what the evaluator sets), interleaved
in one process, the same episodes each time.

    python benchmarks/eval_threads_bench.py --run demo-out/run [--tasks window-close] [--episodes 3] [--rounds 2]

The renderer lives in a child process (``kidata.envs.metaworld.Scene``); with one torch thread per
core the policy's OpenMP workers spin between its small forwards and take the cores the renderer
needs. Prints seconds per configuration (best of --rounds) and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="a kidata train run on a Meta-World recipe")
    parser.add_argument("--tasks", nargs="+", default=["window-close"])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch

    from kidata import policy as policies
    from kidata.eval import metaworld

    loaded = policies.load(args.run)
    scene = metaworld.SceneSettings.from_recipe(loaded.manifest.recipe)
    single = metaworld.torch_threads
    default_threads = torch.get_num_threads()
    default, one = "default threads", "one thread (the evaluator)"
    seconds: dict[str, list[float]] = {default: [], one: []}
    for _ in range(args.rounds):
        for label in seconds:
            metaworld.torch_threads = single if label == one else (lambda count: contextlib.nullcontext())
            started = time.perf_counter()
            metaworld.evaluate_metaworld(loaded, args.tasks, episodes=args.episodes, scene=scene)
            seconds[label].append(time.perf_counter() - started)
    metaworld.torch_threads = single
    best = {label: min(times) for label, times in seconds.items()}
    for label, value in best.items():
        print(f"{label:32s} {value:7.1f} s  (best of {args.rounds}; torch default here: {default_threads} threads)")
    print(f"default / one thread: {best[default] / best[one]:.2f}x")


if __name__ == "__main__":
    main()
