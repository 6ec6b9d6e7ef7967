"""``kidata model params`` / ``kidata model memory``: parameter counts and the memory model of presets."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    model = commands.add_parser("model", help="model presets")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    params = actions.add_parser("params", help="parameter count per part of model presets",
                                epilog="example:\n  kidata model params ki_tiny ki_2b")
    params.add_argument("presets", nargs="+", help="shipped preset names (ki_2b) or TOML files")
    params.set_defaults(handler=params_command)

    memory = actions.add_parser("memory", help="per-GPU bytes of weights, gradients, AdamW and EMA (no activations)",
                                epilog="example:\n  kidata model memory ki_2b --gpus 1 8 64")
    memory.add_argument("preset", help="a shipped preset name (ki_2b) or a TOML file")
    memory.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64], help="world sizes to show")
    memory.set_defaults(handler=memory_command)


def params_command(args: argparse.Namespace) -> int:
    from kidata.model.config import ModelConfig
    from kidata.model.weights import parameter_counts

    for preset in args.presets:
        counts = parameter_counts(ModelConfig.load(preset))
        print(f"{preset}: " + ", ".join(f"{name} {value / 1e6:,.1f}M" for name, value in counts.items()))
    return 0


def memory_command(args: argparse.Namespace) -> int:
    from kidata.model.config import ModelConfig
    from kidata.training.memory import SETTINGS, estimate, preset_sizes

    total, trainable, block = preset_sizes(ModelConfig.load(args.preset))
    print(f"{args.preset}: {total / 1e9:.2f}B parameters ({trainable / 1e9:.2f}B trained), largest FSDP unit "
          f"{block / 1e6:.0f}M; GiB per GPU before activations")
    print("| setting | GPUs | weights | grads | AdamW | EMA | gathered | total |")
    print("|---|---|---|---|---|---|---|---|")
    gib = 2**30
    for setting in SETTINGS:
        for gpus in args.gpus:
            e = estimate(total, trainable, block, gpus, setting)
            print(f"| {setting} | {gpus} | {e.weights / gib:.1f} | {e.gradients / gib:.1f} | {e.adam / gib:.1f} | "
                  f"{e.ema / gib:.1f} | {e.gathered / gib:.1f} | **{e.total / gib:.1f}** |")
    return 0
