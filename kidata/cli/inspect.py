"""``kidata inspect [OUT]``: a build's summary and decoded samples, or example samples of an encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = ("robot", "subtask", "caption", "vqa", "point", "detect")


def add_parser(commands) -> None:
    from kidata.choices import PromptFormat, StateEncoding
    from kidata.config import choices

    inspect = commands.add_parser("inspect", help="show samples as text pieces with masks and decoded actions",
                                  epilog="examples:\n  kidata inspect demo-out --samples 2\n"
                                         "  kidata inspect --example robot vqa    # no build: example samples")
    inspect.add_argument("out", nargs="?", help="a build's output folder (omit to see example samples)")
    inspect.add_argument("--samples", type=int, default=3, help="samples shown per source")
    inspect.add_argument("--save", help="folder for the PNG contact sheet and action plot (default OUT/inspect)")
    inspect.add_argument("--example", nargs="+", default=["robot", "subtask", "vqa", "detect"], choices=EXAMPLES,
                         help="without a build: which example samples to encode and show")
    inspect.add_argument("--text-tokenizer", default="tokenizers/demo-text", help="without a build: text tokenizer")
    inspect.add_argument("--fast-tokenizer", help="FAST directory (default: fit one on generated chunks)")
    inspect.add_argument("--prompt-format", default="pi05", choices=choices(PromptFormat),
                         help="without a build")
    inspect.add_argument("--state-encoding", default="text", choices=choices(StateEncoding),
                         help="without a build")
    inspect.add_argument("--max-tokens", type=int, default=256, help="without a build: token budget per sample")
    inspect.add_argument("--horizon", type=int, default=10, help="without a build: action chunk length")
    inspect.add_argument("--action-dim", type=int, default=7, help="without a build: action dimensions")
    inspect.set_defaults(handler=inspect_command)


def inspect_command(args: argparse.Namespace) -> int:
    if args.out:
        from kidata.pipelines.inspect_build import inspect_build

        save = args.save or (str(Path(args.out) / "inspect") if "://" not in args.out else None)
        print(inspect_build(args.out, samples=args.samples, save=save))
        return 0
    for text in example_samples(args.example, text_tokenizer=args.text_tokenizer, fast_tokenizer=args.fast_tokenizer,
                                prompt_format=args.prompt_format, state_encoding=args.state_encoding,
                                max_tokens=args.max_tokens, horizon=args.horizon, action_dim=args.action_dim):
        print(text)
        print()
    return 0


def example_samples(names: list[str] | tuple[str, ...], *, text_tokenizer: str = "tokenizers/demo-text",
                    fast_tokenizer: str | None = None, prompt_format: str = "pi05", state_encoding: str = "text",
                    max_tokens: int = 256, horizon: int = 10, action_dim: int = 7) -> list[str]:
    """``kidata inspect`` without a build: one described sample per task kind, encoded with these
    settings (FAST fitted on generated chunks unless a tokenizer folder is given)."""
    import numpy as np

    from kidata.sources.synthetic import action_chunks
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.inspect import describe_sample
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.tokenizers.text import TextTokenizer

    text = TextTokenizer.load(text_tokenizer)
    chunks = action_chunks(2000, horizon, action_dim, seed=0)
    fast = FastTokenizer.load(fast_tokenizer) if fast_tokenizer else FastTokenizer.fit(chunks, vocab_size=1024)
    encoder = SampleEncoder(text, fast, prompt_format=prompt_format, state_encoding=state_encoding,
                            max_tokens=max_tokens)
    state = np.linspace(-0.9, 0.9, 8)
    valid = np.ones(horizon, bool)
    examples = {
        "robot": lambda: encoder.robot("pick up the red block", state, chunks[0], valid),
        "subtask": lambda: encoder.robot("clean the table", state, chunks[0], valid, subtask="pick up the sponge"),
        "caption": lambda: encoder.caption("a robot arm above a table"),
        "vqa": lambda: encoder.vqa("what color is the cup", "blue"),
        "point": lambda: encoder.point("cup", [(0.25, 0.5)]),
        "detect": lambda: encoder.detect("cup", [(0.1, 0.2, 0.5, 0.6)]),
    }
    return [describe_sample(examples[name](), encoder) for name in names]
