"""``kidata assets``: the recipes, presets and tokenizer shipped inside the package, by the names
every command accepts (``kidata build demo`` works from any folder); ``kidata assets copy`` puts
one in the working folder to edit."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_parser(commands) -> None:
    assets = commands.add_parser("assets", help="list the shipped recipes, model presets and tokenizers; copy one",
                                 epilog="examples:\n  kidata assets\n"
                                        "  kidata assets copy pipelines/my_robot.toml    # -> ./my_robot.toml\n"
                                        "  kidata assets copy demo                       # -> ./demo.toml")
    assets.add_argument("action", nargs="?", choices=["list", "copy"], default="list", help="list them, or copy one")
    assets.add_argument("name", nargs="?", help="with copy: the asset (pipelines/my_robot.toml, model/ki_tiny.toml)")
    assets.add_argument("dest", nargs="?", help="with copy: where to (default: its file name, here)")
    assets.set_defaults(handler=assets_command)


def assets_command(args: argparse.Namespace) -> int:
    from kidata import assets

    if args.action == "copy":
        if not args.name:
            raise SystemExit("kidata assets copy: name the asset, e.g. pipelines/my_robot.toml (see `kidata assets`)")
        found = assets.find(args.name)
        if not found:
            raise SystemExit(f"kidata assets copy: {args.name} is not shipped (see `kidata assets`)")
        if len(found) > 1:
            names = [str(path.relative_to(assets.ROOT)) for path in found]
            raise SystemExit(f"kidata assets copy: {args.name} names {names}; give the one you mean")
        source = found[0]
        target = Path(args.dest or source.name)
        if target.exists():
            raise SystemExit(f"kidata assets copy: {target} exists; give another destination")
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        print(f"{target} (a copy of {args.name}: edit it, then pass its path)")
        return 0
    for kind, names in assets.listing().items():
        print(f"{kind}:")
        for name in names:
            print(f"  {name}")
    print(f"(in {assets.ROOT}; a local file of the same relative path takes precedence)")
    return 0
