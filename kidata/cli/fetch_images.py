"""``kidata fetch-images``: PixMo's images into a local mirror (resumable, verified)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    fetch = commands.add_parser("fetch-images", help="download PixMo images into a local mirror (resumable, verified)",
                                epilog="example:\n  kidata fetch-images --parquet pixmo-cap.parquet --mirror pixmo-images")
    fetch.add_argument("--parquet", nargs="+", required=True, help="PixMo parquet files")
    fetch.add_argument("--mirror", required=True, help="mirror folder (files named by sha256)")
    fetch.add_argument("--workers", type=int, default=16, help="parallel downloads")
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds for one image's whole download")
    fetch.add_argument("--report", help="failure report JSON (default: MIRROR/fetch_report.json)")
    fetch.add_argument("--allow-network", action="append", metavar="CIDR",
                       help="also reach this non-public network (e.g. 10.0.0.0/8 for a mirror on yours; repeatable); "
                            "loopback, private, link-local and metadata addresses are refused otherwise")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=fetch_command)


def fetch_command(args: argparse.Namespace) -> int:
    from kidata.sources.fetch import fetch_images, summarize, write_report

    report = fetch_images(args.parquet, args.mirror, workers=args.workers, timeout=args.timeout,
                          progress=not args.quiet, allowed=args.allow_network or ())
    print(summarize(report))
    report_path = args.report or str(Path(args.mirror) / "fetch_report.json")
    write_report(report, report_path)
    print(f"report written to {report_path}")
    return 0 if report.failed == 0 else 1
