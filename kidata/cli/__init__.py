"""The ``kidata`` command. Each subcommand is one module of this package with an ``add_parser``
function (it adds the subcommand's parser and sets its ``handler``); the dispatcher here finds the
modules, parses, and calls the handler. A new command is a new module, nothing else.

A failure ends in one line naming what went wrong (exit code 2); ``--debug`` or ``KIDATA_DEBUG=1``
lets the exception propagate with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Sequence

# the order ``kidata --help`` lists the commands in: the user's journey; modules not named here follow
ORDER = ("demo", "stats", "fast", "build", "verify", "inspect", "train", "eval", "compare", "serve", "export", "model",
         "fetch_images", "assets")


def command_modules() -> list[str]:
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return sorted(names, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))


def build_parser() -> argparse.ArgumentParser:
    from kidata import __version__

    parser = argparse.ArgumentParser(
        prog="kidata", description="Knowledge-insulated VLA training: FAST tokenizers, mixtures, training, evaluation.",
        epilog="the journey: kidata fast fit --recipe R -> kidata build R -> kidata train -> kidata eval / "
               "kidata.policy.load (README: Quick start for your own robot)")
    parser.add_argument("--version", action="version", version=f"kidata {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a failure's traceback (or KIDATA_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").add_parser(commands)
    _teach(parser)
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown next to every option that has one; examples (epilogs) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)) or action.default in ([], ""):
            return action.help or ""
        return super()._get_help_string(action)


def _teach(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's help shows defaults and keeps its examples' line breaks."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _teach(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code (for tests and scripts)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    if args.debug or os.environ.get("KIDATA_DEBUG", "") not in ("", "0"):
        return args.handler(args)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - the one place errors become a sentence
        message = str(error) or type(error).__name__
        if isinstance(error, KeyError):  # str(KeyError) adds quotes around the message
            message = str(error.args[0]) if error.args else message
        print(f"kidata {args.command}: {message} [{type(error).__name__}; --debug shows the traceback]",
              file=sys.stderr)
        return 2


def run() -> None:
    """The ``kidata`` console script."""
    from kidata.pipelines.engine import exit_without_final_collection

    exit_without_final_collection()
    sys.exit(main())
