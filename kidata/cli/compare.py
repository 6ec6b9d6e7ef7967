"""``kidata compare``: KI vs pi0 vs joint vs pi0-FAST vs frozen, with and without co-training, on one
mixture with one budget (``kidata.compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    compare = commands.add_parser(
        "compare", help="train the paper's variants on one mixture and compare them (table and plots)",
        epilog="examples:\n"
               "  kidata train --model model/ki_tiny.toml --data runs/cmp/data/manifest.json --model.variant vlm \\\n"
               "      --data.weights '{metaworld_scenes = 1.0}' --out runs/vlm\n"
               "  kidata compare --recipe pipelines/metaworld_cotrain.toml --model model/ki_tiny.toml --init runs/vlm \\\n"
               "      --variants ki,pi0,joint,pi0_fast,frozen --cotrain on,off --seeds 3 --steps 1000 \\\n"
               "      --metaworld-episodes 5 --metaworld-evaluations 2 --jobs 2 --out runs/cmp")
    # defaults and help come from CompareConfig, the one place they are declared
    from dataclasses import MISSING, fields

    from kidata.compare.runs import CompareConfig

    default = {f.name: f.default for f in fields(CompareConfig) if f.default is not MISSING}
    arms = {True: "on", False: "off"}
    compare.add_argument("--recipe", required=True, help="the mixture's recipe (built once into OUT/data)")
    compare.add_argument("--model", required=True, help="the model preset every run trains")
    compare.add_argument("--out", required=True, help="output directory (runs, compare.json, compare.md, plots)")
    compare.add_argument("--init", default=default["init"],
                         help="a kidata run whose backbone initializes every run (a vlm run)")
    compare.add_argument("--variants", default=",".join(default["variants"]), help="comma-separated variants")
    compare.add_argument("--cotrain", default=",".join(arms[on] for on in default["cotrain"]),
                         help="co-training arms: on, off or on,off")
    compare.add_argument("--seeds", type=int, default=default["seeds"], help="seeds per arm")
    compare.add_argument("--steps", type=int, default=default["steps"], help="training steps per run")
    compare.add_argument("--evaluations", type=int, default=default["evaluations"],
                         help="evaluations per run (and one at step 0)")
    compare.add_argument("--target-mse", type=float, default=default["target_mse"],
                         help="action error of the steps-to-reach statistic (default: the runs' mean final error)")
    compare.add_argument("--metaworld-episodes", type=int, default=default["metaworld_episodes"],
                         help="closed-loop episodes per task at each evaluation (a recipe with a metaworld source)")
    compare.add_argument("--metaworld-evaluations", type=int, default=default["metaworld_evaluations"],
                         help="run closed-loop at this many of the evaluations, evenly spaced, the last included "
                              "(0: at every one)")
    compare.add_argument("--workers", type=int, default=default["workers"], help="build worker processes")
    compare.add_argument("--jobs", type=int, default=default["jobs"],
                         help="runs trained at once, each in its own process on its share of the cores")
    compare.add_argument("--report-only", action="store_true", help="recompute the table and plots from the runs")
    compare.set_defaults(handler=compare_command, overrides=[], accepts_overrides=True)  # --table.key value: every run


def compare_command(args: argparse.Namespace) -> int:
    from kidata.compare import CompareConfig, compare, report
    from kidata.training.config import check_overrides

    arms = {"on": True, "off": False}
    cotrain = [part.strip() for part in args.cotrain.split(",") if part.strip()]
    unknown = [part for part in cotrain if part not in arms]
    if unknown:
        raise ValueError(f"--cotrain takes on, off or on,off, got {unknown}")
    overrides = check_overrides([item for item in args.overrides if item != "--"])  # "--" before them is allowed
    config = CompareConfig(recipe=args.recipe, model=args.model, out=Path(args.out),
                           variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
                           cotrain=tuple(arms[part] for part in cotrain), seeds=args.seeds, steps=args.steps,
                           evaluations=args.evaluations, init=args.init, target_mse=args.target_mse,
                           metaworld_episodes=args.metaworld_episodes,
                           metaworld_evaluations=args.metaworld_evaluations, workers=args.workers, jobs=args.jobs,
                           overrides=overrides)
    summary = report(config) if args.report_only else compare(config)
    print((Path(args.out) / "compare.md").read_text())
    print(f"compare: {args.out}/compare.json, compare.md, {', '.join(Path(p).name for p in summary['plots'])}")
    return 0
