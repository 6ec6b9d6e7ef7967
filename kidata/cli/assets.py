"""``kidata assets``: the recipes, presets and tokenizer shipped inside the package, by the names
every command accepts (``kidata build pipelines/demo.toml`` works from any folder)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    assets = commands.add_parser("assets", help="list the shipped recipes, model presets and tokenizers",
                                 epilog="example:\n  kidata assets")
    assets.set_defaults(handler=assets_command)


def assets_command(args: argparse.Namespace) -> int:
    from kidata import assets

    for kind, names in assets.listing().items():
        print(f"{kind}:")
        for name in names:
            print(f"  {name}")
    print(f"(in {assets.ROOT}; a local file of the same relative path takes precedence)")
    return 0
