"""``kidata fast fit`` / ``chunks`` / ``report`` / ``push``: FAST action tokenizers on normalized chunks or a
recipe."""

from __future__ import annotations

import argparse

import numpy as np


def add_parser(commands) -> None:
    fast = commands.add_parser("fast", help="fit and inspect FAST action tokenizers")
    actions = fast.add_subparsers(dest="fast_command", metavar="ACTION", required=True)

    fit = actions.add_parser("fit", help="fit a FAST tokenizer on a recipe's robot data or normalized chunks",
                             epilog="examples:\n  kidata fast fit --recipe my_robot.toml --out fast_tokenizer\n"
                                    "  kidata fast fit --chunks chunks.npy --vocab-size 1024 --out fast_tokenizer")
    fit.add_argument("--chunks", help=".npy file of normalized chunks [N, H, D]")
    fit.add_argument("--recipe", help="fit on the robot sources of a recipe (pass 1 of a build)")
    fit.add_argument("--source", nargs="+", help="with --recipe: only these sources")
    fit.add_argument("--workers", type=int, default=1, help="with --recipe: worker processes")
    fit.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary (byte alphabet + merges) (default: 1024)")
    fit.add_argument("--scale", type=float, default=None, help="DCT coefficient scale before rounding (default 10; "
                     "not with --target-rmse)")
    fit.add_argument("--target-rmse", type=float, default=None, help="pick the scale for this rounding RMSE")
    fit.add_argument("--min-frequency", type=int, default=None, help="least count for a BPE merge (default: 2)")
    fit.add_argument("--margin", type=int, default=None, help="codes kept beyond the training range on each side "
                     "(default: an eighth of the span, at most vocab-size/32; values beyond are clipped and counted)")
    fit.add_argument("--out", required=True, help="directory to write the tokenizer into")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(handler=fit_command)

    chunks = actions.add_parser("chunks", help="write a recipe's normalized action chunks (what a build fits FAST "
                                               "on) to a .npy file, for fast fit --chunks and fast report",
                                epilog="example:\n  kidata fast chunks --recipe my_robot.toml --out chunks.npy")
    chunks.add_argument("--recipe", required=True, help="the recipe whose robot sources are read (pass 1 of a build)")
    chunks.add_argument("--source", nargs="+", help="only these sources")
    chunks.add_argument("--workers", type=int, default=1, help="worker processes")
    chunks.add_argument("--out", required=True, help=".npy file to write: float64 [N, action_horizon, action_dim]")
    chunks.add_argument("--quiet", action="store_true", help="no progress bars")
    chunks.set_defaults(handler=chunks_command)

    push = actions.add_parser("push", help="upload a fitted tokenizer folder to a Hugging Face hub repo",
                              epilog="example:\n  kidata fast push fast_tokenizer --repo my-org/my-robot-fast")
    push.add_argument("directory", help="the folder kidata fast fit wrote")
    push.add_argument("--repo", required=True, help="hub repo id, org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.set_defaults(handler=push_command)

    report = actions.add_parser("report", help="token lengths, compression and reconstruction error of a "
                                               "tokenizer on chunks",
                                epilog="example:\n  kidata fast report fast_tokenizer --chunks chunks.npy --out report")
    report.add_argument("tokenizer", help="FAST tokenizer directory (processor_config.json + tokenizer.json)")
    report.add_argument("--chunks", required=True, help=".npy file of normalized chunks [N, H, D]")
    report.add_argument("--out", default="fast_report", help="directory for report.json and PNG plots")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.set_defaults(handler=report_command)


def load_chunks(path: str) -> np.ndarray:
    """Normalized chunks [N, H, D] from a .npy file (memory-mapped, never unpickled); an empty
    file, another shape or non-finite values are refused in one sentence."""
    chunks = np.load(path, mmap_mode="r", allow_pickle=False)
    if chunks.ndim != 3:
        raise SystemExit(f"{path}: expected normalized chunks [N, H, D], got shape {chunks.shape}")
    if 0 in chunks.shape:
        raise SystemExit(f"{path}: holds no chunks (shape {chunks.shape}); write at least one [H, D] chunk")
    if not np.issubdtype(chunks.dtype, np.number) or not np.isfinite(chunks).all():
        bad = int((~np.isfinite(chunks)).any(axis=(1, 2)).sum()) if np.issubdtype(chunks.dtype, np.number) else len(chunks)
        raise SystemExit(f"{path}: {bad} of {len(chunks)} chunks hold NaN or inf values; drop them before fitting")
    return chunks


def fit_command(args: argparse.Namespace) -> int:
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import measure_tokenizer, write_report

    if args.recipe:
        return _fit_on_recipe(args)
    vocab_size = 1024 if args.vocab_size is None else args.vocab_size
    min_frequency = 2 if args.min_frequency is None else args.min_frequency
    if not args.chunks:
        raise SystemExit("kidata fast fit: give --chunks FILE.npy or --recipe RECIPE.toml")
    if args.scale is not None and args.target_rmse is not None:
        raise SystemExit("kidata fast fit: give --scale or --target-rmse, not both (--target-rmse picks the scale)")
    chunks = load_chunks(args.chunks)
    print(f"fitting FAST on {chunks.shape[0]} chunks of shape {chunks.shape[1:]} ...", flush=True)
    scale = args.scale if args.scale is not None else 10.0
    tokenizer = FastTokenizer.fit(np.asarray(chunks), vocab_size=vocab_size, scale=scale,
                                  target_rmse=args.target_rmse, min_frequency=min_frequency,
                                  margin=args.margin, show_progress=not args.quiet)
    out = tokenizer.save(args.out)
    report = measure_tokenizer(tokenizer, chunks, progress=not args.quiet)
    report_dir = write_report(report, out / "report")
    print(report.summary())
    print(f"tokenizer written to {out} (sha256 {tokenizer.sha256[:12]}); report in {report_dir}")
    return 0


def _fit_on_recipe(args: argparse.Namespace) -> int:
    from kidata.pipelines.recipe import load_recipe
    from kidata.pipelines.stats_pass import fit_fast_from_recipe
    from kidata.recipe import FastFit, fast_setting_table

    if args.chunks:
        raise SystemExit("kidata fast fit: give --chunks FILE.npy or --recipe RECIPE.toml, not both")
    given = [flag for flag, value in (("--vocab-size", args.vocab_size), ("--scale", args.scale),
                                      ("--target-rmse", args.target_rmse), ("--min-frequency", args.min_frequency),
                                      ("--margin", args.margin)) if value is not None]
    if given:
        raise SystemExit(f"kidata fast fit: {', '.join(given)} {'is' if len(given) == 1 else 'are'} for --chunks; with "
                         f"--recipe the fit options are the [mixture] fast_tokenizer table of {args.recipe}, so set "
                         "them there (or fit the chunks kidata fast chunks writes)")
    recipe = load_recipe(args.recipe)
    tokenizer, report = fit_fast_from_recipe(recipe, args.out, sources=args.source,
                                             workers=args.workers, progress=not args.quiet)
    print(report.summary())
    print(f"tokenizer written to {args.out} (sha256 {tokenizer.sha256[:12]}), statistics in {args.out}/stats.json, "
          f"report in {args.out}/report")
    setting = recipe.mixture.fast_tokenizer
    if isinstance(setting, FastFit):
        print(f"a build of the recipe fits its own FAST tokenizer the same way; to build with this one instead, set "
              f"[mixture] fast_tokenizer = \"{args.out}\"")
    else:  # the recipe names no fit: this one took FastTokenizer.fit's defaults
        print(f"the recipe's fast_tokenizer = {fast_setting_table(setting)!r} fits no FAST tokenizer, so this one took "
              f"the fit's defaults; to build with it, set [mixture] fast_tokenizer = \"{args.out}\"")
    return 0


def chunks_command(args: argparse.Namespace) -> int:
    from kidata.pipelines.recipe import load_recipe
    from kidata.pipelines.stats_pass import recipe_chunks

    chunks, _ = recipe_chunks(load_recipe(args.recipe), sources=args.source, workers=args.workers,
                              progress=not args.quiet)
    with open(args.out, "wb") as handle:
        np.save(handle, chunks, allow_pickle=False)  # the exact values a build fits on
    print(f"{args.out}: {chunks.shape[0]} normalized chunks of shape {tuple(chunks.shape[1:])} ({chunks.dtype}), the sample "
          "a build of this recipe fits FAST on")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import measure_tokenizer, write_report

    chunks = load_chunks(args.chunks)
    report = measure_tokenizer(FastTokenizer.load(args.tokenizer), chunks, progress=not args.quiet)
    report_dir = write_report(report, args.out)
    print(report.summary())
    print(f"report written to {report_dir}")
    return 0


def push_command(args: argparse.Namespace) -> int:
    from kidata.tokenizers.hub import push

    print(f"uploaded {args.directory} to {push(args.directory, args.repo, private=args.private)}")
    return 0

