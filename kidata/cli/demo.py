"""``kidata demo``: the main job on embedded data (Meta-World rollouts): build, train, evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="the main job on the embedded default data (build, train, evaluate)",
                               epilog="example:\n  kidata demo --out demo-out    # ~10 minutes on 2 CPU cores")
    demo.add_argument("--out", default="demo-out", help="output directory")
    demo.add_argument("--workers", type=int, default=2, help="build worker processes")
    demo.add_argument("--train-steps", type=int, help="training steps (default: the demo's 5000)")
    demo.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per task")
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from kidata.demo import run_demo

    run_demo(Path(args.out), workers=args.workers, train_steps=args.train_steps, eval_episodes=args.eval_episodes)
    return 0
