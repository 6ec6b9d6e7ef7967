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

    memory = actions.add_parser(
        "memory", help="per-GPU memory of a training step: parameters, gradients, AdamW, EMA, activations; "
                       "which GPUs it fits",
        epilog="examples:\n  kidata model memory --preset ki_2b_lora --batch 32 --checkpointing\n"
               "  kidata model memory --preset ki_2b --batch 32 --fsdp 8 --checkpointing\n"
               "  kidata model memory ki_2b --gpus 1 8 64   (the model state alone, per FSDP setting)")
    memory.add_argument("preset", nargs="?", help="a shipped preset name (ki_2b) or a TOML file")
    memory.add_argument("--preset", dest="preset_option", help="the same, as an option")
    memory.add_argument("--lora", nargs="?", const="{}", metavar="TABLE",
                        help="LoRA on top of the preset: a TOML table ('{ backbone_rank = 16, expert_rank = 32 }'; "
                             "bare: openpi's defaults)")
    memory.add_argument("--batch", type=int, help="global batch (default: the preset's [data] batch_size)")
    memory.add_argument("--fsdp", type=int, default=1, metavar="N", help="GPUs sharding the model and the batch")
    memory.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing (default: the preset's [train] setting)")
    memory.add_argument("--tokens", type=int, default=200, help="text tokens per sample (the mixture's max_tokens)")
    memory.add_argument("--cameras", type=int, help="images per sample (default: the preset's [data] cameras)")
    memory.add_argument("--fp32", action="store_true", help="no bf16 autocast (what a CPU run does)")
    memory.add_argument("--frozen-bf16", action="store_true",
                        help="frozen linear weights stored in bf16, as openpi (default: the preset's "
                             "[train] frozen_weights)")
    memory.add_argument("--gpus", type=int, nargs="+", help="instead: the model state alone on these world sizes")
    memory.set_defaults(handler=memory_command)


def params_command(args: argparse.Namespace) -> int:
    from kidata.model.config import ModelConfig
    from kidata.model.weights import parameter_counts

    for preset in args.presets:
        counts = parameter_counts(ModelConfig.load(preset))
        print(f"{preset}: " + ", ".join(f"{name} {value / 1e6:,.1f}M" for name, value in counts.items()))
    return 0


def memory_command(args: argparse.Namespace) -> int:
    preset = args.preset_option or args.preset
    if not preset:
        raise SystemExit("kidata model memory: name a preset (--preset ki_2b or a TOML file)")
    if args.gpus:
        return state_table(preset, args.gpus)
    from dataclasses import replace

    from kidata.config import parse_overrides
    from kidata.training.config import TrainConfig
    from kidata.training.memory import CARDS_GIB, plan

    config = TrainConfig.load(preset)
    model = config.model
    if args.lora is not None:
        model = replace(model, lora=parse_overrides(["--model.lora", args.lora])["model.lora"])
    batch = args.batch or config.data.batch_size
    cameras = args.cameras or len(config.data.cameras)
    checkpointing = args.checkpointing or config.train.activation_checkpointing
    frozen_bf16 = args.frozen_bf16 or config.train.frozen_weights == "bf16"
    if frozen_bf16 and args.fp32:
        raise SystemExit("kidata model memory: --frozen-bf16 needs bf16 autocast and --fp32 turns it off: drop one")
    if batch < 1 or args.fsdp < 1 or args.tokens < 1 or cameras < 1:
        raise SystemExit("kidata model memory: --batch, --fsdp, --tokens and --cameras must be >= 1")
    result = plan(model, batch=batch, gpus=args.fsdp, checkpointing=checkpointing, tokens=args.tokens,
                  cameras=cameras, bf16=not args.fp32, ema=config.optim.ema_decay > 0, frozen_bf16=frozen_bf16)
    unit, scale = ("GiB", 2**30) if result.total >= 2**30 else ("MiB", 2**20)
    per_gpu = -(-batch // args.fsdp)
    lora = model.lora
    print(f"{preset}{' + --lora' if args.lora is not None else ''}: batch {batch} on {args.fsdp} GPU(s) ({per_gpu} per "
          f"GPU), {cameras} image(s) + {args.tokens} text tokens per sample, {'fp32' if args.fp32 else 'bf16 autocast'}"
          f", activation checkpointing {'on' if checkpointing else 'off'}"
          + (f", LoRA ranks {lora.backbone_rank}/{lora.expert_rank}" if lora else ""))
    print(f"| per GPU | {unit} |")
    print("|---|---|")
    weights = "fp32, frozen linear weights bf16" if frozen_bf16 else "fp32, frozen included"
    for label, value in ((f"parameters ({weights})", result.parameters), ("gradients", result.gradients),
                         ("AdamW state", result.optimizer), ("weight EMA", result.ema),
                         ("bf16 weight copies", result.copies), ("activations", result.activations)):
        print(f"| {label} | {value / scale:.1f} |")
    print(f"| **total** | **{result.total / scale:.1f}** |")
    print("fits: " + ", ".join(f"{card} GB {'yes' if result.fits(card) else 'no'}" for card in CARDS_GIB))
    return 0


def state_table(preset: str, gpus: list[int]) -> int:
    from kidata.model.config import ModelConfig
    from kidata.training.memory import SETTINGS, estimate, preset_sizes

    total, trainable, block = preset_sizes(ModelConfig.load(preset))
    print(f"{preset}: {total / 1e9:.2f}B parameters ({trainable / 1e9:.2f}B trained), largest FSDP unit "
          f"{block / 1e6:.0f}M; GiB per GPU before activations")
    print("| setting | GPUs | weights | grads | AdamW | EMA | gathered | total |")
    print("|---|---|---|---|---|---|---|---|")
    gib = 2**30
    for setting in SETTINGS:
        for count in gpus:
            e = estimate(total, trainable, block, count, setting)
            print(f"| {setting} | {count} | {e.weights / gib:.1f} | {e.gradients / gib:.1f} | {e.adam / gib:.1f} | "
                  f"{e.ema / gib:.1f} | {e.gathered / gib:.1f} | **{e.total / gib:.1f}** |")
    return 0
