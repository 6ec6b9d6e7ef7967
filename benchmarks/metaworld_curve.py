"""The learning curve of a run with ``[eval] metaworld``: closed-loop success per task at each
evaluation, with steps and wall time, from ``RUN/metrics.jsonl`` (printed as a Markdown table for
docs/results/metaworld.md).

    .venv/bin/python benchmarks/metaworld_curve.py runs/metaworld
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def curve(run: Path) -> str:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evaluations = [r for r in records if "eval" in r and "metaworld_success" in r["eval"]]
    if not evaluations:
        raise SystemExit(f"{run}/metrics.jsonl has no closed-loop evaluation: train with [eval] metaworld")
    tasks = sorted(k.split("/", 1)[1] for k in evaluations[0]["eval"] if k.startswith("metaworld_success/"))
    lines = ["| step | wall min | " + " | ".join(tasks) + " | mean | held-out action MSE |",
             "|---" * (len(tasks) + 4) + "|"]
    for record in evaluations:
        result = record["eval"]
        seconds = record.get("wall_s", record.get("elapsed_s"))  # the whole run's, else this process's
        minutes = f"{seconds / 60:.1f}" if seconds is not None else "-"
        lines.append(f"| {record['step']} | {minutes} | "
                     + " | ".join(f"{result[f'metaworld_success/{t}']:.2f}" for t in tasks)
                     + f" | **{result['metaworld_success']:.2f}** | {result.get('action_mse', float('nan')):.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(curve(Path(sys.argv[1])))
