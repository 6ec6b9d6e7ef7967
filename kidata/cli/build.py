"""``kidata build RECIPE --out OUT``: a recipe into webdataset shards and a manifest."""

from __future__ import annotations

import argparse
import errno
import signal
import sys


def add_parser(commands) -> None:
    build = commands.add_parser("build", help="build a mixture: recipe -> webdataset shards + manifest",
                                epilog="examples:\n  kidata build demo --out demo-out                # a shipped recipe by name\n"
                                       "  kidata build my_robot.toml --out mix --workers 2")
    build.add_argument("recipe", help="recipe TOML (a file, or a shipped one: pipelines/demo.toml; `kidata assets`)")
    build.add_argument("--out", required=True, help="output folder or fsspec URL (s3://, gs://, memory://)")
    build.add_argument("--engine", default="local", choices=["local", "ray"],
                       help="local worker processes, or a Ray cluster")
    build.add_argument("--workers", type=int, default=1, help="worker processes (local engine)")
    build.add_argument("--ray-address", default=None, help="Ray cluster address (ray engine; default: local)")
    build.add_argument("--force", action="store_true", help="replace a build of a different recipe in OUT (only the files a build "
                       "wrote; refused, naming them, when OUT holds anything else)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(handler=build_command)


def build_command(args: argparse.Namespace) -> int:
    from kidata.cli._stopping import SigtermAsInterrupt
    from kidata.pipelines.build import BuildError, build, summary
    from kidata.pipelines.recipe import RecipeError, load_recipe

    stop = SigtermAsInterrupt()
    try:
        with stop:
            recipe = load_recipe(args.recipe)
            manifest = build(recipe, args.out, engine=args.engine, workers=args.workers, force=args.force,
                             progress=not args.quiet, ray_address=args.ray_address)
    except (RecipeError, BuildError) as error:
        print(f"kidata build: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kidata build: stopped by {signal.Signals(stop.signum).name}; the units {args.out} completed are kept: "
              "the same command resumes the build", file=sys.stderr)
        return 128 + stop.signum
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        print(f"kidata build: the disk is full ({error.filename or args.out}); the units {args.out} completed are "
              "kept: free space and run the same command to resume", file=sys.stderr)
        return 2
    print(summary(manifest, args.out))
    return 0
