"""``kidata inspect [OUT]``: a build's summary and decoded samples, or example samples of an encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = ("robot", "subtask", "caption", "vqa", "point", "detect")


def add_parser(commands) -> None:
    inspect = commands.add_parser("inspect", help="show samples as text pieces with masks and decoded actions")
    inspect.add_argument("out", nargs="?", help="a build's output folder (omit to see example samples)")
    inspect.add_argument("--samples", type=int, default=3, help="samples shown per source")
    inspect.add_argument("--save", help="folder for the PNG contact sheet and action plot (default OUT/inspect)")
    inspect.add_argument("--example", nargs="+", default=["robot", "subtask", "vqa", "detect"], choices=EXAMPLES)
    inspect.add_argument("--text-tokenizer", default="tokenizers/demo-text")
    inspect.add_argument("--fast-tokenizer", help="FAST directory (default: fit one on generated chunks)")
    inspect.add_argument("--prompt-format", default="pi05", choices=["pi05", "pi0fast"])
    inspect.add_argument("--state-encoding", default="text", choices=["text", "special", "continuous"])
    inspect.add_argument("--max-tokens", type=int, default=256)
    inspect.add_argument("--horizon", type=int, default=10)
    inspect.add_argument("--action-dim", type=int, default=7)
    inspect.set_defaults(handler=inspect_command)


def inspect_command(args: argparse.Namespace) -> int:
    if args.out:
        from kidata.pipelines.inspect_build import inspect_build

        save = args.save or (str(Path(args.out) / "inspect") if "://" not in args.out else None)
        print(inspect_build(args.out, samples=args.samples, save=save))
        return 0
    from kidata.tokenizers.inspect import example_samples

    for text in example_samples(args.example, text_tokenizer=args.text_tokenizer, fast_tokenizer=args.fast_tokenizer,
                                prompt_format=args.prompt_format, state_encoding=args.state_encoding,
                                max_tokens=args.max_tokens, horizon=args.horizon, action_dim=args.action_dim):
        print(text)
        print()
    return 0
