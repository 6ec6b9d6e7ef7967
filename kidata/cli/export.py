"""``kidata export rlds`` / ``kidata export lerobot``: a recipe's robot source written as an RLDS/TFDS
or a LeRobot v3.0 dataset."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    export = commands.add_parser("export", help="write a source's episodes in another layout")
    formats = export.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    rlds = formats.add_parser("rlds", help="a robot source of a recipe as an RLDS/TFDS dataset",
                              epilog="example:\n  kidata export rlds --recipe demo --source metaworld --out exported")
    rlds.add_argument("--recipe", required=True, help="the recipe holding the source")
    rlds.add_argument("--source", required=True, help="the recipe source to export")
    rlds.add_argument("--out", required=True, help="TFDS data_dir to write into")
    rlds.add_argument("--name", help="dataset name (default: the source name)")
    rlds.set_defaults(handler=rlds_command)

    lerobot = formats.add_parser("lerobot", help="a robot source of a recipe as a LeRobot v3.0 dataset",
                                 epilog="example:\n  kidata export lerobot --recipe demo --source metaworld --out exported")
    lerobot.add_argument("--recipe", required=True, help="the recipe holding the source")
    lerobot.add_argument("--source", required=True, help="the recipe source to export")
    lerobot.add_argument("--out", required=True, help="new folder for the dataset")
    lerobot.add_argument("--robot-type", default="unknown", help="info.json robot_type")
    lerobot.add_argument("--codec", default="av1", choices=["av1", "h264"],
                         help="video codec (av1: libsvtav1, LeRobot's default; h264: libx264)")
    lerobot.add_argument("--max-episodes", type=int, help="export only the first N episodes")
    lerobot.set_defaults(handler=lerobot_command)

    weights = formats.add_parser("weights", help="a run's model weights as one consolidated safetensors file",
                                 epilog="example:\n  kidata export weights runs/tiny --out tiny.safetensors")
    weights.add_argument("run", help="the --out folder of kidata train")
    weights.add_argument("--out", required=True, help="the .safetensors file to write")
    weights.add_argument("--checkpoint", help="a checkpoint folder of the run (default: the newest complete one)")
    weights.add_argument("--no-ema", action="store_true", help="the trained weights, not their EMA")
    weights.add_argument("--format", default="safetensors", choices=["safetensors"], help="file format")
    weights.add_argument("--merge-lora", action="store_true",
                         help="fold a LoRA run's adapters into the base weights (a file for an unadapted model)")
    weights.set_defaults(handler=weights_command)


def rlds_command(args: argparse.Namespace) -> int:
    from kidata.pipelines.export import export_rlds
    from kidata.pipelines.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    source = recipe.source(args.source)
    if source.kind != "robot":
        raise SystemExit(f"{args.source} is a {source.kind} source; only robot episodes export to RLDS")
    directory = export_rlds(recipe.open(source).episodes(), args.out, name=args.name or args.source)
    print(f"RLDS dataset: {directory} (read it back with reader = \"rlds\", mapping from kidata_mapping.json)")
    return 0


def lerobot_command(args: argparse.Namespace) -> int:
    import itertools

    from kidata.pipelines.export_lerobot import export_lerobot
    from kidata.pipelines.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    source = recipe.source(args.source)
    if source.kind != "robot":
        raise SystemExit(f"{args.source} is a {source.kind} source; only robot episodes export to LeRobot")
    episodes = recipe.open(source).episodes()
    if args.max_episodes:
        episodes = itertools.islice(episodes, args.max_episodes)
    root = export_lerobot(episodes, args.out, robot_type=args.robot_type, codec=args.codec)
    print(f"LeRobot v3.0 dataset: {root}. Read it back with reader = \"lerobot\", path = \"{root}\", mapping = "
          "{ cameras = { <camera> = \"observation.images.<camera>\" }, state = [\"observation.state\"], "
          "action = [\"action\"] }")
    return 0


def weights_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kidata.training.export import export_weights

    out = export_weights(Path(args.run), Path(args.out), checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                         use_ema=not args.no_ema, merge_lora=args.merge_lora)
    print(f"weights: {out['path']} ({out['tensors']} tensors, {out['parameters'] / 1e6:.1f}M parameters, "
          f"{'EMA' if out['ema'] else 'trained'} weights of {out['checkpoint']}"
          f"{', LoRA adapters merged' if out['merged_lora'] else ''}); load with "
          "kidata.model.weights.load_weights(KIModel(config), path), the config in the file's metadata")
    return 0
