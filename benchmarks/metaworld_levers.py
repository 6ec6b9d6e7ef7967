"""Inference-time levers of a trained Meta-World policy, measured closed-loop on one checkpoint.

    python benchmarks/metaworld_levers.py --run runs/metaworld [--checkpoint DIR] [--episodes 20]

Each row changes one lever from the baseline (the weight EMA, the flow expert with 10 Euler steps,
5 of the chunk's actions executed before replanning), runs the same evaluator as
``kidata eval metaworld`` on the same evaluation seeds, and prints success per task: the levers
issue 16 asks about that need no retraining (replanning interval, flow integration steps, EMA, the
flow's starting noise and sample averaging, and for a ``ki`` model the FAST-token head its backbone
trains alongside the expert). Record results
on docs/results/metaworld.md.
"""

from __future__ import annotations

import argparse
import time

LEVERS = {  # name -> (policy.load keywords, Chunking keywords)
    "baseline: EMA, flow, 10 steps, replan 5": ({}, {}),
    "replan every action": ({}, {"replan": 1}),
    "replan every 10 (whole chunk)": ({}, {"replan": 10}),
    "flow integration steps 3": ({"num_steps": 3}, {}),
    "flow integration steps 30": ({"num_steps": 30}, {}),
    "trained weights, no EMA": ({"use_ema": False}, {}),
    "FAST tokens (backbone head)": ({"action_head": "fast"}, {}),
    "flow noise scale 0 (deterministic chunk)": ({"noise_scale": 0.0}, {}),
    "mean of 8 flow samples": ({"flow_samples": 8}, {}),
}


def main() -> None:
    from kidata import policy as policies
    from kidata.eval.chunking import Chunking
    from kidata.eval.metaworld import SceneSettings, evaluate_metaworld

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--tasks", nargs="+", default=["reach", "push", "button-press-topdown"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="lever names containing one of these words")
    args = parser.parse_args()
    print(f"kidata Meta-World levers, {time.strftime('%Y-%m-%d')}: {args.run} "
          f"({args.checkpoint or 'newest checkpoint'}), {args.episodes} episodes per task")
    print("| lever | " + " | ".join(args.tasks) + " | mean | minutes |")
    print("|---|" + "---|" * (len(args.tasks) + 2))
    for name, (load, evaluate) in LEVERS.items():
        if args.only and not any(word.lower() in name.lower() for word in args.only):
            continue
        start = time.perf_counter()
        try:
            policy = policies.load(args.run, checkpoint=args.checkpoint, **load)
        except ValueError as error:  # e.g. FAST tokens of a model that trains none
            print(f"| {name} | not applicable: {error} |")
            continue
        scene = SceneSettings.from_recipe(policy.manifest.recipe, policy.source)
        outcome = evaluate_metaworld(policy, args.tasks, episodes=args.episodes, scene=scene,
                                     chunking=Chunking(**{"replan": 5, **evaluate}))
        rates = [outcome["success_rate"][task] for task in sorted(outcome["success_rate"], key=lambda t: [
            i for i, wanted in enumerate(args.tasks) if t.startswith(wanted)][0])]
        minutes = (time.perf_counter() - start) / 60
        print(f"| {name} | " + " | ".join(f"{rate:.2f}" for rate in rates)
              + f" | **{outcome['mean_success_rate']:.2f}** | {minutes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
