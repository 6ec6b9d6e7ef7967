"""``kidata train``: a model trained on a built mixture (one CPU, or under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def add_parser(commands) -> None:
    from kidata import assets
    from kidata.training.config import SECTIONS

    tables = ", ".join(f"[{name}]" for name in ("model", *SECTIONS))
    presets = ", ".join(name.split("/")[1].removesuffix(".toml") for name in assets.listing()["model"])
    train = commands.add_parser(
        "train", help="train a model on a built mixture (torchrun-ready)",
        description=f"A preset's tables: {tables}. Any field can be overridden on the command line: --optim.lr 5e-5 "
                    f"--train.steps 200 --model.variant joint. Shipped presets: {presets}. Every field with the value "
                    "a preset and overrides give it: kidata train --model ki_tiny [overrides] --print-config.",
        epilog="examples:\n  kidata train --model ki_tiny --data demo-out/manifest.json --out runs/tiny\n"
               "  kidata train --out runs/tiny --resume                       # its saved config, from its newest checkpoint\n"
               "  kidata train --model ki_tiny --train.steps 500 --print-config   # the resolved config, as TOML\n"
               "  torchrun --nproc_per_node 8 -m kidata.cli train --model ki_2b --data gs://b/mix/manifest.json "
               "--out runs/ki2b")
    train.add_argument("--model", help="a preset: a shipped name (ki_tiny) or a TOML file (with --resume: not needed, "
                                       "the run's saved config is continued)")
    train.add_argument("--data", help="the build's manifest.json (path or URL)")
    train.add_argument("--out", default="runs/default", help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from the run's newest complete checkpoint with "
                                                            "its saved config (overrides given change it)")
    train.add_argument("--allow-config-change", action="store_true",
                       help="on --resume, accept changes to train.steps and the eval / log / checkpoint tables")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config (the preset, or the run's with --resume, plus overrides) as TOML "
                            "and exit without training")
    train.set_defaults(handler=train_command, overrides=[], accepts_overrides=True)
    train.epilog += "\n\n" + defaults_help()


def defaults_help() -> str:
    """Every table's fields with their defaults (what a preset leaves unset) and, for a choice, the
    values it takes: generated from the config dataclasses, so ``--help`` cannot drift from them."""
    import dataclasses
    import textwrap

    from kidata.config import field_choices, toml_value
    from kidata.model.config import ModelConfig
    from kidata.training.config import SECTIONS

    lines = ["fields and their defaults (--table.key value overrides one):"]
    for name, kind in {"model": ModelConfig, **SECTIONS}.items():
        picks = field_choices(kind)
        items = []
        for spec in dataclasses.fields(kind):
            default = (spec.default if spec.default is not dataclasses.MISSING
                       else spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)
            text = "unset" if default is None else toml_value(default)
            items.append(f"{spec.name} = {text}" + (f" ({' | '.join(picks[spec.name][0])})" if spec.name in picks else ""))
        lines.append(textwrap.fill(", ".join(items), width=110, initial_indent=f"  [{name}] ", subsequent_indent="      ",
                                   break_on_hyphens=False))
    return "\n".join(lines)


def train_command(args: argparse.Namespace) -> int:
    from kidata.cli._stopping import SigtermAsInterrupt
    from kidata.config import parse_overrides
    from kidata.manifest import ManifestMismatch
    from kidata.training.checkpoint import CheckpointError
    from kidata.training.config import TrainConfig
    from kidata.training.trainer import TrainingDiverged, train

    overrides = list(args.overrides)
    stop = SigtermAsInterrupt()
    try:
        parse_overrides(overrides)  # a mistake is named in the arguments typed, before --data joins them
        if args.data:
            overrides += ["--data.manifest", json.dumps(args.data)]
        with stop:
            if args.resume:
                from kidata.training.resume import resumed_config
                from kidata.training.run_dir import RunDir

                if args.model:
                    print(f"kidata train: --resume continues {args.out}/config.json; --model {args.model} is not read",
                          file=sys.stderr)
                config = resumed_config(RunDir(args.out), overrides)
            elif not args.model:
                raise ValueError("--model: name a preset (a shipped name such as ki_tiny, or a TOML file); "
                                 "only --resume continues a run without one")
            else:
                config = TrainConfig.load(args.model, overrides)
            if args.print_config:
                from kidata.config import to_toml

                print(to_toml(config.to_json()), end="")
                return 0
            from kidata.eval.during_training import closed_loop_hook

            report = train(config, args.out, resume=args.resume, allow_config_change=args.allow_config_change,
                           closed_loop=closed_loop_hook(config))
    except (ManifestMismatch, TrainingDiverged, CheckpointError, FileExistsError, ValueError) as error:
        print(f"kidata train: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank is stopped; one says so
            print(f"kidata train: {stopped(Path(args.out), stop.signum)}", file=sys.stderr)
        return 128 + stop.signum
    if report:
        print(json.dumps(report, indent=2, sort_keys=True))
        print(f"run: {args.out} (metrics.jsonl, loss_curves.png, checkpoints/)")
    return 0


def stopped(run: Path, signum: int) -> str:
    """What a stopped run holds and the command that continues it."""
    from kidata.training.run_dir import RunDir

    name = signal.Signals(signum).name
    newest, _ = RunDir(run).newest_complete() if run.is_dir() else (None, [])
    if newest is None:
        return f"stopped by {name} before {run} held a complete checkpoint; the same command starts it again"
    return (f"stopped by {name}; {run}'s newest complete checkpoint is {newest.name}: the same command with "
            "--resume continues from it")
