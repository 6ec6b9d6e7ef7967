"""``kidata export rlds``: a recipe's robot source written as an RLDS/TFDS dataset."""

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
