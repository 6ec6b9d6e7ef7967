"""The ``kidata`` command: ``kidata --help`` lists the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def _load_chunks(path: str) -> np.ndarray:
    """Normalized chunks [N, H, D] from a .npy file (memory-mapped, never unpickled)."""
    chunks = np.load(path, mmap_mode="r", allow_pickle=False)
    if chunks.ndim != 3:
        raise SystemExit(f"{path}: expected normalized chunks [N, H, D], got shape {chunks.shape}")
    if 0 in chunks.shape:
        raise SystemExit(f"{path}: holds no chunks (shape {chunks.shape}); write at least one [H, D] chunk")
    if not np.issubdtype(chunks.dtype, np.number) or not np.isfinite(chunks).all():
        bad = int((~np.isfinite(chunks)).any(axis=(1, 2)).sum()) if np.issubdtype(chunks.dtype, np.number) else len(chunks)
        raise SystemExit(f"{path}: {bad} of {len(chunks)} chunks hold NaN or inf values; drop them before fitting")
    return chunks


def _fast_fit(args: argparse.Namespace) -> int:
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import evaluate, write_report

    if args.recipe:
        return _fast_fit_recipe(args)
    if not args.chunks:
        raise SystemExit("kidata fast fit: give --chunks FILE.npy or --recipe RECIPE.toml")
    chunks = _load_chunks(args.chunks)
    print(f"fitting FAST on {chunks.shape[0]} chunks of shape {chunks.shape[1:]} ...", flush=True)
    tokenizer = FastTokenizer.fit(
        np.asarray(chunks),
        vocab_size=args.vocab_size,
        scale=args.scale,
        target_rmse=args.target_rmse,
        min_frequency=args.min_frequency,
        show_progress=not args.quiet,
    )
    out = tokenizer.save(args.out)
    report = evaluate(tokenizer, chunks, progress=not args.quiet)
    report_dir = write_report(report, out / "report")
    print(report.summary())
    print(f"tokenizer written to {out} (sha256 {tokenizer.sha256[:12]}); report in {report_dir}")
    return 0


def _fast_fit_recipe(args: argparse.Namespace) -> int:
    from kidata.pipelines.build import fit_fast_from_recipe
    from kidata.pipelines.recipe import load_recipe

    tokenizer, report = fit_fast_from_recipe(load_recipe(args.recipe), args.out, sources=args.source,
                                             workers=args.workers, progress=not args.quiet)
    print(report.summary())
    print(f"tokenizer written to {args.out} (sha256 {tokenizer.sha256[:12]}), statistics in {args.out}/stats.json, "
          f"report in {args.out}/report")
    return 0


def _fast_report(args: argparse.Namespace) -> int:
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import evaluate, write_report

    chunks = _load_chunks(args.chunks)
    report = evaluate(FastTokenizer.load(args.tokenizer), chunks, progress=not args.quiet)
    report_dir = write_report(report, args.out)
    print(report.summary())
    print(f"report written to {report_dir}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from kidata.pipelines.stats import format_table, source_stats
    from kidata.sources.registry import open_source

    mapping = json.loads(Path(args.mapping).read_text()) if args.mapping else None
    rlds = {"dataset": args.dataset, "mapping": mapping, "split": args.split, "action_space": args.action_space,
            "skip_corrupt": args.skip_corrupt} if args.reader == "rlds" else {}
    source = open_source(args.reader, path=args.path if args.reader == "rlds" else args.path.split(","),
                         name=args.name, **rlds)
    stats, report = source_stats(source, workers=args.workers, progress=not args.quiet)
    result = stats.finalize()
    print(format_table(result))
    print(f"episodes {stats.episodes}; quarantined {report.quarantined.as_dict()}; notices {dict(report.notices)}")
    if args.out:
        payload = {"source": source.name, "episodes": stats.episodes, **result.to_json(),
                   "quarantined": report.quarantined.as_dict(), "notices": dict(report.notices),
                   "failed_units": report.failed_units}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"statistics written to {args.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.out:
        from kidata.pipelines.inspect_build import inspect_build

        save = args.save or (str(Path(args.out) / "inspect") if "://" not in args.out else None)
        print(inspect_build(args.out, samples=args.samples, save=save))
        return 0
    from kidata.sources.synthetic import action_chunks
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.inspect import describe_sample
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.tokenizers.text import TextTokenizer

    text = TextTokenizer.load(args.text_tokenizer)
    chunks = action_chunks(2000, args.horizon, args.action_dim, seed=0)
    fast = FastTokenizer.load(args.fast_tokenizer) if args.fast_tokenizer else FastTokenizer.fit(chunks, vocab_size=1024)
    encoder = SampleEncoder(text, fast, prompt_format=args.prompt_format, state_encoding=args.state_encoding,
                            max_tokens=args.max_tokens)
    state = np.linspace(-0.9, 0.9, 8)
    examples = {
        "robot": lambda: encoder.robot("pick up the red block", state, chunks[0], np.ones(args.horizon, bool)),
        "subtask": lambda: encoder.robot("clean the table", state, chunks[0], np.ones(args.horizon, bool),
                                         subtask="pick up the sponge"),
        "caption": lambda: encoder.caption("a robot arm above a table"),
        "vqa": lambda: encoder.vqa("what color is the cup", "blue"),
        "point": lambda: encoder.point("cup", [(0.25, 0.5)]),
        "detect": lambda: encoder.detect("cup", [(0.1, 0.2, 0.5, 0.6)]),
    }
    for name in args.example:
        print(describe_sample(examples[name](), encoder))
        print()
    return 0


def _fetch_images(args: argparse.Namespace) -> int:
    from kidata.sources.fetch import fetch_images, summarize, write_report

    report = fetch_images(args.parquet, args.mirror, workers=args.workers, timeout=args.timeout,
                          progress=not args.quiet)
    print(summarize(report))
    report_path = args.report or str(Path(args.mirror) / "fetch_report.json")
    write_report(report, report_path)
    print(f"report written to {report_path}")
    return 0 if report.failed == 0 else 1


def _build(args: argparse.Namespace) -> int:
    import json

    from kidata.pipelines.build import BuildError, build
    from kidata.pipelines.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
        manifest = build(recipe, args.out, engine=args.engine, workers=args.workers, force=args.force,
                         progress=not args.quiet, ray_address=args.ray_address)
    except (RecipeError, BuildError) as error:
        print(f"kidata build: {error}", file=sys.stderr)
        return 2
    for source in manifest["sources"]:
        print(f"{source['name']:>24}: {source['episodes']} {'episodes' if source['kind'] == 'robot' else 'examples'}, "
              f"{source['samples']} samples, {len(source['shards'])} shards, quarantined {source['quarantined']}, "
              f"rejected {source['rejected']}" + (f", SKIPPED {source['skipped']}" if source.get("skipped") else ""))
    report = json.loads(Path(args.out, "build_report.json").read_text()) if "://" not in args.out else {}
    if report:
        print(f"{report['samples']} samples in {report['seconds']:.1f} s ({report['samples_per_second']:.0f} samples/s)")
        cost = report["cost"]
        print(f"pass 1 {cost['pass1']['wall_seconds']:.1f} s, FAST {cost['fast_seconds']:.1f} s, pass 2 "
              f"{cost['pass2']['wall_seconds']:.1f} s ({cost['pass2']['job_seconds']:.1f} s inside units); peak RSS "
              f"{cost['coordinator_peak_rss_mib']:.0f} MiB here, {cost['pass2']['worker_peak_rss_mib']:.0f} MiB per worker")
    print(f"manifest: {args.out}/manifest.json; report: {args.out}/build_report.json")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from kidata.pipelines.verify import verify

    problems = verify(args.out)
    for problem in problems:
        print(problem)
    print("all shards verify" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _model_params(args: argparse.Namespace) -> int:
    from kidata.model.config import ModelConfig
    from kidata.model.weights import parameter_counts

    for preset in args.presets:
        counts = parameter_counts(ModelConfig.load(preset))
        print(f"{preset}: " + ", ".join(f"{name} {value / 1e6:,.1f}M" for name, value in counts.items()))
    return 0


def _train(args: argparse.Namespace) -> int:
    from kidata.loader.mixture import ManifestMismatch
    from kidata.training.checkpoint import CheckpointError
    from kidata.training.config import TrainConfig
    from kidata.training.trainer import TrainingDiverged, train

    overrides = list(args.overrides)
    if args.data:
        overrides += ["--data.manifest", json.dumps(args.data)]
    try:
        config = TrainConfig.load(args.model, overrides)
        report = train(config, args.out, resume=args.resume, allow_config_change=args.allow_config_change)
    except (ManifestMismatch, TrainingDiverged, CheckpointError, FileExistsError, ValueError) as error:
        print(f"kidata train: {error}", file=sys.stderr)
        return 2
    if report:
        print(json.dumps(report, indent=2, sort_keys=True))
        print(f"run: {args.out} (metrics.jsonl, loss_curves.png, checkpoints/)")
    return 0


def _export_rlds(args: argparse.Namespace) -> int:
    from kidata.pipelines.build import open_source
    from kidata.pipelines.export import export_rlds
    from kidata.pipelines.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    source = recipe.source(args.source)
    if source.kind != "robot":
        raise SystemExit(f"{args.source} is a {source.kind} source; only robot episodes export to RLDS")
    directory = export_rlds(open_source(recipe, source).episodes(), args.out, name=args.name or args.source)
    print(f"RLDS dataset: {directory} (read it back with reader = \"rlds\", mapping from kidata_mapping.json)")
    return 0


def _eval_metaworld(args: argparse.Namespace) -> int:
    from kidata.eval.metaworld import ExpertPolicy, RandomPolicy, SceneSettings, evaluate_metaworld

    if args.run:
        from kidata import policy as policies

        policy = policies.load(args.run, source=args.source)
        if args.check_parity:
            from kidata.eval.parity import check_parity

            report = check_parity(policy, samples=args.episodes)
            print(json.dumps(report, indent=1, sort_keys=True))
            print("parity: the model sees the same inputs in training and in the simulator" if report["ok"] else
                  "parity: MISMATCH - the tensors marked ok=false differ between the data path and the live policy")
            return 0 if report["ok"] else 1
        try:
            scene = SceneSettings.from_manifest(policy.manifest, policy.source)
        except ValueError:  # a run trained on other data: the model's size, the default cameras
            scene = SceneSettings(image_size=policy.config.model.image_size)
        policy.num_steps = args.num_steps
        chunk_policy = policy
    else:
        if args.check_parity:
            raise SystemExit("kidata eval metaworld: --check-parity needs --run")
        scene = SceneSettings(goal_marker_scale=args.goal_marker_scale)
        chunk_policy = ExpertPolicy() if args.policy == "expert" else RandomPolicy(seed=args.seed)
    if args.image_size:
        scene = dataclasses.replace(scene, image_size=args.image_size)
    result = evaluate_metaworld(chunk_policy, args.tasks, episodes=args.episodes, replan=args.replan,
                                max_steps=args.max_steps, scene=scene, out=args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "episodes"}, indent=2, sort_keys=True))
    if args.out:
        print(f"contact sheets, action plots and metaworld_eval.json in {args.out}")
    return 0


def _eval_privileged(args: argparse.Namespace) -> int:
    from kidata.eval.privileged import run_baseline

    report = run_baseline(args.recipe, episodes=args.episodes, replan=args.replan, max_steps=args.max_steps,
                          steps=args.steps, source_name=args.source, out=args.out)
    result = report["closed_loop"]
    print(json.dumps({"episodes_trained": report["episodes_trained"], "samples": report["samples"],
                      "seconds_collect_and_train": report["seconds_collect_and_train"],
                      "success_rate": result["success_rate"], "mean_success_rate": result["mean_success_rate"]},
                     indent=2, sort_keys=True))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kidata.demo import run_demo

    run_demo(Path(args.out), workers=args.workers, train_steps=args.train_steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kidata",
        description="Build knowledge-insulated VLA training data: FAST tokenizers, mixtures, training.",
    )
    from kidata import __version__

    parser.add_argument("--version", action="version", version=f"kidata {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a failure's traceback (or KIDATA_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fast = commands.add_parser("fast", help="fit and inspect FAST action tokenizers")
    fast_commands = fast.add_subparsers(dest="fast_command", metavar="ACTION", required=True)

    fit = fast_commands.add_parser("fit", help="fit a FAST tokenizer on normalized chunks [N, H, D]")
    fit.add_argument("--chunks", help=".npy file of normalized chunks [N, H, D]")
    fit.add_argument("--recipe", help="fit on the robot sources of a recipe (pass 1 of a build)")
    fit.add_argument("--source", nargs="+", help="with --recipe: only these sources")
    fit.add_argument("--workers", type=int, default=1, help="with --recipe: worker processes")
    fit.add_argument("--vocab-size", type=int, default=1024)
    fit.add_argument("--scale", type=float, default=10.0, help="DCT coefficient scale before rounding")
    fit.add_argument(
        "--target-rmse", type=float, default=None, help="pick the scale for this rounding RMSE"
    )
    fit.add_argument("--min-frequency", type=int, default=2, help="least count for a BPE merge")
    fit.add_argument("--out", required=True, help="directory to write the tokenizer into")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(handler=_fast_fit)

    report = fast_commands.add_parser(
        "report", help="token lengths, compression and reconstruction error of a tokenizer on chunks"
    )
    report.add_argument("tokenizer", help="FAST tokenizer directory (processor_config.json + tokenizer.json)")
    report.add_argument("--chunks", required=True, help=".npy file of normalized chunks [N, H, D]")
    report.add_argument("--out", default="fast_report", help="directory for report.json and PNG plots")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.set_defaults(handler=_fast_report)

    stats = commands.add_parser("stats", help="normalization statistics of a robot source (no image decoding)")
    stats.add_argument("--reader", required=True, choices=["rlds", "libero_hdf5"])
    stats.add_argument("--path", required=True, help="RLDS <name>/<version> dir (local, gs://, s3://) or LIBERO files/dirs, comma-separated")
    stats.add_argument("--dataset", help="standardization registry entry (rlds), e.g. bridge_dataset, droid")
    stats.add_argument("--mapping", help="JSON file with your own dataset's key mapping (rlds)")
    stats.add_argument("--name", help="source name (default: the dataset name)")
    stats.add_argument("--split", default="train")
    stats.add_argument("--action-space", help="DROID: joint_velocity | joint_position | cartesian_velocity")
    stats.add_argument("--workers", type=int, default=1, help="worker processes")
    stats.add_argument("--skip-corrupt", action="store_true", help="count unreadable units instead of failing")
    stats.add_argument("--out", help="write the statistics JSON here")
    stats.add_argument("--quiet", action="store_true", help="no progress bar")
    stats.set_defaults(handler=_stats)

    inspect = commands.add_parser("inspect", help="show samples as text pieces with masks and decoded actions")
    inspect.add_argument("out", nargs="?", help="a build's output folder (omit to see example samples)")
    inspect.add_argument("--samples", type=int, default=3, help="samples shown per source")
    inspect.add_argument("--save", help="folder for the PNG contact sheet and action plot (default OUT/inspect)")
    inspect.add_argument("--example", nargs="+", default=["robot", "subtask", "vqa", "detect"],
                         choices=["robot", "subtask", "caption", "vqa", "point", "detect"])
    inspect.add_argument("--text-tokenizer", default="tokenizers/demo-text")
    inspect.add_argument("--fast-tokenizer", help="FAST directory (default: fit one on generated chunks)")
    inspect.add_argument("--prompt-format", default="pi05", choices=["pi05", "pi0fast"])
    inspect.add_argument("--state-encoding", default="text", choices=["text", "special", "continuous"])
    inspect.add_argument("--max-tokens", type=int, default=256)
    inspect.add_argument("--horizon", type=int, default=10)
    inspect.add_argument("--action-dim", type=int, default=7)
    inspect.set_defaults(handler=_inspect)

    fetch = commands.add_parser("fetch-images", help="download PixMo images into a local mirror (resumable, verified)")
    fetch.add_argument("--parquet", nargs="+", required=True, help="PixMo parquet files")
    fetch.add_argument("--mirror", required=True, help="mirror folder (files named by sha256)")
    fetch.add_argument("--workers", type=int, default=16)
    fetch.add_argument("--timeout", type=float, default=30.0)
    fetch.add_argument("--report", help="failure report JSON (default: MIRROR/fetch_report.json)")
    fetch.add_argument("--quiet", action="store_true")
    fetch.set_defaults(handler=_fetch_images)

    build = commands.add_parser("build", help="build a mixture: recipe -> webdataset shards + manifest")
    build.add_argument("recipe", help="recipe TOML (pipelines/*.toml)")
    build.add_argument("--out", required=True, help="output folder or fsspec URL (s3://, gs://, memory://)")
    build.add_argument("--engine", default="local", choices=["local", "ray"])
    build.add_argument("--workers", type=int, default=1, help="worker processes (local engine)")
    build.add_argument("--ray-address", default=None, help="Ray cluster address (ray engine; default: local)")
    build.add_argument("--force", action="store_true", help="replace a build of a different recipe in OUT")
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(handler=_build)

    verify = commands.add_parser("verify", help="re-hash every shard of a build against its manifest")
    verify.add_argument("out")
    verify.set_defaults(handler=_verify)

    model = commands.add_parser("model", help="model presets")
    model_commands = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    params = model_commands.add_parser("params", help="parameter count per part of model presets")
    params.add_argument("presets", nargs="+", help="model/*.toml")
    params.set_defaults(handler=_model_params)

    train = commands.add_parser(
        "train", help="train a model on a built mixture (torchrun-ready)",
        description="Any config field can be overridden: --optim.lr 5e-5 --train.steps 200 --model.variant joint",
    )
    train.add_argument("--model", required=True, help="preset, model/*.toml ([model], [train], [optim], ...)")
    train.add_argument("--data", help="the build's manifest.json (path or URL)")
    train.add_argument("--out", default="runs/default", help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from the run's newest complete checkpoint")
    train.add_argument("--allow-config-change", action="store_true",
                       help="on --resume, accept changes to train.steps and the eval / log / checkpoint tables")
    train.set_defaults(handler=_train, overrides=[])

    export = commands.add_parser("export", help="write a source's episodes in another layout")
    export_commands = export.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    rlds = export_commands.add_parser("rlds", help="a robot source of a recipe as an RLDS/TFDS dataset")
    rlds.add_argument("--recipe", required=True)
    rlds.add_argument("--source", required=True, help="the recipe source to export")
    rlds.add_argument("--out", required=True, help="TFDS data_dir to write into")
    rlds.add_argument("--name", help="dataset name (default: the source name)")
    rlds.set_defaults(handler=_export_rlds)

    evaluate = commands.add_parser("eval", help="closed-loop evaluation of policies")
    eval_commands = evaluate.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)
    metaworld = eval_commands.add_parser("metaworld", help="success rates in Meta-World")
    chooser = metaworld.add_mutually_exclusive_group(required=True)
    chooser.add_argument("--run", help="a kidata train run directory")
    chooser.add_argument("--policy", choices=("expert", "random"), help="a reference policy")
    metaworld.add_argument("--tasks", nargs="+", default=["MT10"], help="task names or MT10 / MT50")
    metaworld.add_argument("--episodes", type=int, default=5, help="episodes per task")
    metaworld.add_argument("--replan", type=int, default=5, help="actions executed per predicted chunk")
    metaworld.add_argument("--max-steps", type=int, default=300)
    metaworld.add_argument("--num-steps", type=int, default=10, help="flow integration steps")
    metaworld.add_argument("--image-size", type=int, help="render size (default: the model's)")
    metaworld.add_argument("--source", help="the run's robot source whose statistics apply")
    metaworld.add_argument("--seed", type=int, default=0)
    metaworld.add_argument("--goal-marker-scale", type=float, default=1.0,
                           help="goal marker size for --policy runs (a --run takes its recipe's)")
    metaworld.add_argument("--check-parity", action="store_true",
                           help="compare the model inputs of held-out samples (data path) with the live policy's; "
                                "--episodes samples")
    metaworld.add_argument("--out", help="folder for contact sheets, action plots and metaworld_eval.json")
    metaworld.set_defaults(handler=_eval_metaworld)
    privileged = eval_commands.add_parser(
        "privileged", help="an MLP on the simulator's full state, trained on a recipe's Meta-World episodes: "
                           "what the demonstrations support without perception")
    privileged.add_argument("--recipe", required=True)
    privileged.add_argument("--source", help="the recipe's metaworld source (default: the first)")
    privileged.add_argument("--steps", type=int, default=3000, help="training steps of the MLP")
    privileged.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    privileged.add_argument("--replan", type=int, default=5)
    privileged.add_argument("--max-steps", type=int, default=300)
    privileged.add_argument("--out", help="folder for privileged.json and the evaluator's files")
    privileged.set_defaults(handler=_eval_privileged)

    demo = commands.add_parser("demo", help="the main job on the embedded default data")
    demo.add_argument("--out", default="demo-out", help="output directory")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--train-steps", type=int, help="training steps (default: the demo's 3500)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. A failure ends in one line naming what went wrong (exit code 2); with
    ``--debug`` or ``KIDATA_DEBUG=1`` the exception propagates with its traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train":
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
    """The ``kidata`` command (``main`` returns its exit code, for tests and scripts)."""
    from kidata.pipelines.engine import exit_without_final_collection

    exit_without_final_collection()
    sys.exit(main())


if __name__ == "__main__":
    run()
