"""``kidata verify OUT``: every shard of a build re-hashed against its manifest."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    verify = commands.add_parser("verify", help="re-hash every shard of a build against its manifest",
                                 epilog="example:\n  kidata verify demo-out    # exit 1 naming each bad shard")
    verify.add_argument("out", help="the build's output folder or URL")
    verify.set_defaults(handler=verify_command)


def verify_command(args: argparse.Namespace) -> int:
    from kidata.pipelines.verify import verify

    problems = verify(args.out)
    for problem in problems:
        print(problem)
    print("all shards verify" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1
