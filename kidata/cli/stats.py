"""``kidata stats``: normalization statistics of one robot source, without decoding images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(commands) -> None:
    from kidata.sources.registry import readers
    from kidata.stats_formats import FORMATS

    file_readers = sorted(name for name, entry in readers().items() if entry.kind == "robot" and "path" in entry.options)
    stats = commands.add_parser("stats", help="normalization statistics of a robot source (no image decoding)",
                                epilog="example:\n  kidata stats --reader rlds --path data/bridge_dataset/1.0.0 "
                                       "--dataset bridge_dataset --out stats.json")
    stats.add_argument("--reader", required=True, choices=file_readers, help="the source's reader")
    stats.add_argument("--path", help="RLDS <name>/<version> dir (local, gs://, s3://), LIBERO files/dirs "
                       "(comma-separated) or a LeRobot dataset folder")
    stats.add_argument("--repo-id", help="lerobot: a Hugging Face hub dataset (org/name) instead of --path")
    stats.add_argument("--revision", help="lerobot: the hub revision of --repo-id")
    stats.add_argument("--dataset", help="standardization registry entry (rlds), e.g. bridge_dataset, droid")
    stats.add_argument("--mapping", help="JSON file with your own dataset's key mapping (rlds; lerobot: cameras, "
                       "state, action)")
    stats.add_argument("--name", help="source name (default: the dataset name)")
    stats.add_argument("--split", default="train", help="the dataset split (rlds)")
    stats.add_argument("--action-space", help="DROID: joint_velocity | joint_position | cartesian_velocity")
    stats.add_argument("--workers", type=int, default=1, help="worker processes")
    stats.add_argument("--skip-corrupt", action="store_true", help="count unreadable units instead of failing")
    stats.add_argument("--delta", help="delta actions, as a recipe's mapping.delta: a JSON list of true/false per "
                       "action dimension, e.g. '[true, true, true, true, true, true, false]' (also read from "
                       "--mapping's \"delta\"); the action statistics become those of action - state chunks")
    stats.add_argument("--action-horizon", type=int, help="with --delta: the chunk length (the recipe's action_horizon)")
    stats.add_argument("--out", help="write the statistics JSON here")
    stats.add_argument("--format", choices=FORMATS, default="kidata",
                       help="--out file layout: kidata (with counts and quarantines), openpi (norm_stats.json) or "
                            "lerobot (meta/stats.json)")
    stats.add_argument("--quiet", action="store_true", help="no progress bar")
    stats.set_defaults(handler=stats_command)


def stats_command(args: argparse.Namespace) -> int:
    from kidata.pipelines.stats import format_table, source_stats
    from kidata.sources.registry import open_source
    from kidata.stats_formats import render

    mapping = json.loads(Path(args.mapping).read_text()) if args.mapping else None
    delta_mask, mapping = _delta_option(args, mapping)
    if args.reader == "lerobot":
        if (args.path is None) == (args.repo_id is None):
            raise SystemExit("kidata stats --reader lerobot: give --path FOLDER or --repo-id ORG/NAME")
        # statistics read state and actions only: cameras need no mapping here
        source = open_source("lerobot", path=args.path, repo_id=args.repo_id, revision=args.revision,
                             mapping=mapping or {"cameras": {}}, name=args.name)
    elif args.path is None:
        raise SystemExit(f"kidata stats --reader {args.reader}: --path is required")
    else:
        rlds = {"dataset": args.dataset, "mapping": mapping, "split": args.split, "action_space": args.action_space,
                "skip_corrupt": args.skip_corrupt} if args.reader == "rlds" else {}
        source = open_source(args.reader, path=args.path if args.reader == "rlds" else args.path.split(","),
                             name=args.name, **rlds)
    stats, report = source_stats(source, workers=args.workers, progress=not args.quiet, delta_mask=delta_mask,
                                 horizon=args.action_horizon or 1)
    result = stats.finalize()
    print(format_table(result))
    if delta_mask is not None:
        relative = [index for index, flag in enumerate(delta_mask) if flag]
        print(f"actions: delta actions (action - state) on dimensions {relative}, over chunks of {args.action_horizon} steps")
    print(f"episodes {stats.episodes}; quarantined {report.quarantined.as_dict()}; notices {dict(report.notices)}")
    if hasattr(source, "conversion_report"):  # gripper conventions at a glance: 1 = open after conversion
        for part, (raw, converted) in source.conversion_report().items():
            print(f"{part}: values {_few(raw)} -> {_few(converted)} (1 = open)")
    if args.out:
        if args.format == "kidata":
            payload = {"source": source.name, "episodes": stats.episodes, **result.to_json(),
                       "quarantined": report.quarantined.as_dict(), "notices": dict(report.notices),
                       "failed_units": report.failed_units}
            text = json.dumps(payload, indent=2) + "\n"
        else:
            text = render(result, args.format)
        Path(args.out).write_text(text)
        print(f"statistics written to {args.out} ({args.format} format)")
    return 0


def _delta_option(args: argparse.Namespace, mapping: dict | None) -> tuple[tuple[bool, ...] | None, dict | None]:
    """(the delta mask or None, the mapping without it: None when it held nothing else)."""
    from kidata.delta import DeltaMaskError, parse_delta_mask

    given = None
    if mapping is not None and "delta" in mapping:
        if args.delta is not None:
            raise SystemExit(f"kidata stats: --delta and the \"delta\" of {args.mapping} both give delta actions; keep one")
        given = mapping["delta"]
        mapping = {key: value for key, value in mapping.items() if key != "delta"} or None
    elif args.delta is not None:
        try:
            given = json.loads(args.delta)
        except ValueError:
            raise SystemExit(f"kidata stats --delta {args.delta}: not JSON; write e.g. '[true, true, false]'") from None
    if given is None:
        return None, mapping
    try:
        mask = parse_delta_mask(given, where="kidata stats --delta")
    except DeltaMaskError as error:
        raise SystemExit(str(error)) from None
    if not args.action_horizon or args.action_horizon < 1:
        raise SystemExit("kidata stats --delta: give --action-horizon H (the recipe's action_horizon); delta statistics "
                         "are over chunks of H steps")
    return mask, mapping


def _few(values: list[float], shown: int = 8) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values[:shown]) + (", ..." if len(values) > shown else "") + "}"

