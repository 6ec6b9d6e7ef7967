"""``kidata train``: a model trained on a built mixture (one CPU, or under torchrun)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(commands) -> None:
    train = commands.add_parser(
        "train", help="train a model on a built mixture (torchrun-ready)",
        description="Any config field can be overridden: --optim.lr 5e-5 --train.steps 200 --model.variant joint")
    train.add_argument("--model", required=True, help="preset, model/*.toml ([model], [train], [optim], ...)")
    train.add_argument("--data", help="the build's manifest.json (path or URL)")
    train.add_argument("--out", default="runs/default", help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from the run's newest complete checkpoint")
    train.add_argument("--allow-config-change", action="store_true",
                       help="on --resume, accept changes to train.steps and the eval / log / checkpoint tables")
    train.set_defaults(handler=train_command, overrides=[], accepts_overrides=True)


def train_command(args: argparse.Namespace) -> int:
    from kidata.manifest import ManifestMismatch
    from kidata.training.checkpoint import CheckpointError
    from kidata.training.config import TrainConfig
    from kidata.training.trainer import TrainingDiverged, train

    overrides = list(args.overrides)
    if args.data:
        overrides += ["--data.manifest", json.dumps(args.data)]
    try:
        config = TrainConfig.load(args.model, overrides)
        report = train(config, args.out, resume=args.resume, allow_config_change=args.allow_config_change)
    except (ManifestMismatch, TrainingDiverged, CheckpointError, FileExistsError, ValueError) as error:
        print(f"kidata train: {error}", file=sys.stderr)
        return 2
    if report:
        print(json.dumps(report, indent=2, sort_keys=True))
        print(f"run: {args.out} (metrics.jsonl, loss_curves.png, checkpoints/)")
    return 0
