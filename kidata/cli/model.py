"""``kidata model params``: parameter counts of model presets."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    model = commands.add_parser("model", help="model presets")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    params = actions.add_parser("params", help="parameter count per part of model presets",
                                epilog="example:\n  kidata model params ki_tiny ki_2b")
    params.add_argument("presets", nargs="+", help="shipped preset names (ki_2b) or TOML files")
    params.set_defaults(handler=params_command)


def params_command(args: argparse.Namespace) -> int:
    from kidata.model.config import ModelConfig
    from kidata.model.weights import parameter_counts

    for preset in args.presets:
        counts = parameter_counts(ModelConfig.load(preset))
        print(f"{preset}: " + ", ".join(f"{name} {value / 1e6:,.1f}M" for name, value in counts.items()))
    return 0
