"""``kidata compare``'s outputs, recomputed from the runs' ``metrics.jsonl`` every time: per arm
over seeds the action-error curve, the steps to a target error (the paper's Fig. 6b statistic),
closed-loop success at each checkpoint, each VLM retention metric before and after, and speed;
``compare.json``, ``compare.md`` and three plots. No direction is asserted: at small scale the
paper's effects may not appear, and the table says what happened."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kidata.compare.runs import CompareConfig

if TYPE_CHECKING:
    from kidata.training.run_dir import RunDir

RETENTION_PREFIX = "vlm_"  # held-out metrics that measure the backbone's VLM knowledge


def read_run(run: RunDir) -> dict[str, Any]:
    """A run's evaluations ({step: metrics}) and its training speed from ``metrics.jsonl``."""
    evaluations: dict[int, dict] = {}
    steps_per_s, samples_per_s, tokens_per_s = [], [], []
    for record in run.metrics():
        if "eval" in record:
            evaluations[int(record["step"])] = record["eval"]
        elif "steps_per_s" in record:
            steps_per_s.append(record["steps_per_s"])
            samples_per_s.append(record.get("samples_per_s", 0.0))
            tokens_per_s.append(record.get("tokens_per_s"))
    report = run.report()
    if report.get("eval"):
        evaluations[int(report.get("steps", max(evaluations, default=0)))] = report["eval"]
    return {"evaluations": dict(sorted(evaluations.items())),
            "steps_per_s": float(np.median(steps_per_s)) if steps_per_s else None,
            "samples_per_s": float(np.median(samples_per_s)) if samples_per_s else None,
            "tokens_per_s": float(np.median(tokens_per_s)) if tokens_per_s and None not in tokens_per_s else None}


def action_error(metrics: dict) -> float | None:
    """The flow expert's held-out action error, or the FAST decode's for a model without an expert."""
    value = metrics.get("action_mse", metrics.get("fast_action_mse"))
    return float(value) if value is not None else None


def steps_to(curve: dict[int, float], target: float) -> int | None:
    """The first evaluated step whose error is at or below ``target`` (None: never within the budget)."""
    return next((step for step, value in sorted(curve.items()) if step > 0 and value <= target), None)


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": round(float(np.mean(known)), 6), "min": round(min(known), 6), "max": round(max(known), 6),
            "n": len(known)}


def summarize(config: CompareConfig, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm (variant, co-training), over seeds: the action-error curve, steps to the target
    error, closed-loop success, each retention metric before (step 0) and after (last step), and
    the training speed. ``runs`` maps a run name to ``read_run``'s record."""
    finals = [action_error(r["evaluations"][max(r["evaluations"])]) for r in runs.values() if r["evaluations"]]
    finals = [v for v in finals if v is not None]
    target = config.target_mse if config.target_mse is not None else (float(np.mean(finals)) if finals else None)
    arms: dict[str, dict[str, Any]] = {}
    for name, variant, cotrain, seed in config.run_names():
        if name not in runs or not runs[name]["evaluations"]:
            continue
        arm = arms.setdefault(f"{variant}-{'cotrain' if cotrain else 'robot'}",
                              {"variant": variant, "cotrain": cotrain, "seeds": {}})
        evaluations = runs[name]["evaluations"]
        curve = {step: action_error(m) for step, m in evaluations.items() if action_error(m) is not None}
        first, last = evaluations[min(evaluations)], evaluations[max(evaluations)]
        arm["seeds"][seed] = {
            "curve": curve, "steps_to_target": steps_to(curve, target) if target is not None else None,
            "final_action_error": curve.get(max(curve)) if curve else None,
            "success": last.get("metaworld_success"), "fast_decode_rate": last.get("fast_decode_rate"),
            "success_curve": {step: m["metaworld_success"] for step, m in evaluations.items()
                              if "metaworld_success" in m},
            "success_per_task": {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("metaworld_success/")},
            "retention": {key: {"before": first.get(key) if min(evaluations) == 0 else None, "after": value}
                          for key, value in last.items()
                          if key.startswith(RETENTION_PREFIX) and isinstance(value, (int, float))},
            "steps_per_s": runs[name]["steps_per_s"], "samples_per_s": runs[name]["samples_per_s"],
            "tokens_per_s": runs[name].get("tokens_per_s")}
    for arm in arms.values():
        seeds = list(arm["seeds"].values())
        steps = sorted({s for seed in seeds for s in seed["curve"]})
        arm["curve"] = {step: _spread([seed["curve"].get(step) for seed in seeds]) for step in steps}
        arm["final_action_error"] = _spread([seed["final_action_error"] for seed in seeds])
        reached = [seed["steps_to_target"] for seed in seeds]
        arm["steps_to_target"] = {**_spread([float(s) for s in reached if s is not None]),
                                  "reached": sum(s is not None for s in reached), "of": len(reached)}
        arm["success"] = _spread([seed["success"] for seed in seeds])
        closed_loop_steps = sorted({s for seed in seeds for s in seed["success_curve"]})
        arm["success_curve"] = {step: _spread([seed["success_curve"].get(step) for seed in seeds])
                                for step in closed_loop_steps}
        arm["fast_decode_rate"] = _spread([seed["fast_decode_rate"] for seed in seeds])
        keys = sorted({key for seed in seeds for key in seed["retention"]})
        arm["retention"] = {key: {when: _spread([seed["retention"].get(key, {}).get(when) for seed in seeds])
                                  for when in ("before", "after")} for key in keys}
        arm["steps_per_s"] = _spread([seed["steps_per_s"] for seed in seeds])
        arm["tokens_per_s"] = _spread([seed["tokens_per_s"] for seed in seeds])
    return {"target_action_error": target, "steps": config.steps, "seeds": config.seeds, "init": config.init,
            "recipe": config.recipe, "model": config.model, "arms": arms}


def markdown(summary: dict[str, Any]) -> str:
    """The comparison as one markdown table: mean [min, max] over seeds."""
    def cell(spread: dict, digits: int = 4) -> str:
        if spread.get("mean") is None:
            return "-"
        if spread["n"] == 1 or spread["min"] == spread["max"]:
            return f"{spread['mean']:.{digits}g}"
        return f"{spread['mean']:.{digits}g} [{spread['min']:.{digits}g}, {spread['max']:.{digits}g}]"

    arms = summary["arms"]
    retention = sorted({key for arm in arms.values() for key in arm["retention"]
                        if "/" not in key or key.startswith("vlm_exact_match/")})
    target = summary["target_action_error"]
    closed_loop = sorted({int(step) for arm in arms.values() for step in arm.get("success_curve", {})})
    header = (["arm", "final action error", f"steps to error <= {target:.4g}" if target is not None else "steps to target",
               "success", "steps/s", "tokens/s"] + [f"{key} before -> after" for key in retention]
              + ([f"success at steps {' / '.join(map(str, closed_loop))}"] if len(closed_loop) > 1 else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, arm in arms.items():
        reach = arm["steps_to_target"]
        row = [name, cell(arm["final_action_error"]),
               f"{cell(reach, 5)} ({reach['reached']}/{reach['of']} seeds)", cell(arm["success"], 3),
               cell(arm["steps_per_s"], 3), cell(arm.get("tokens_per_s", {}), 4)]
        row += [f"{cell(arm['retention'][k]['before'], 3)} -> {cell(arm['retention'][k]['after'], 3)}"
                if k in arm["retention"] else "-" for k in retention]
        if len(closed_loop) > 1:
            curve = {int(step): spread for step, spread in arm.get("success_curve", {}).items()}
            row.append(" / ".join(cell(curve[step], 3) if step in curve else "-" for step in closed_loop))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """action_error.png (a line per arm, min-max band over seeds), success.png, retention.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, written = summary["arms"], []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, arm in arms.items():
        steps = sorted(int(s) for s in arm["curve"] if arm["curve"][s]["mean"] is not None)
        means = [arm["curve"][s]["mean"] for s in steps]
        axis.plot(steps, means, marker="o", label=name, linestyle="-" if arm["cotrain"] else "--")
        axis.fill_between(steps, [arm["curve"][s]["min"] for s in steps], [arm["curve"][s]["max"] for s in steps],
                          alpha=0.15)
    if summary["target_action_error"] is not None:
        axis.axhline(summary["target_action_error"], color="grey", linewidth=0.8, linestyle=":")
    axis.set(xlabel="training step", ylabel="held-out action MSE", yscale="log",
             title="action error vs step (band: min-max over seeds)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "action_error.png", dpi=110)
    written.append(out / "action_error.png")
    plt.close(figure)

    names = list(arms)
    figure, axis = plt.subplots(figsize=(7, 4))
    success = [arms[n]["success"]["mean"] or 0.0 for n in names]
    axis.bar(range(len(names)), success)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    axis.set(ylabel="closed-loop success (last evaluation)", ylim=(0, 1), title="success per arm")
    figure.tight_layout()
    figure.savefig(out / "success.png", dpi=110)
    written.append(out / "success.png")
    plt.close(figure)

    keys = sorted({k for arm in arms.values() for k in arm["retention"]})
    figure, axes = plt.subplots(1, max(1, len(keys)), figsize=(max(4, 3.2 * len(keys)), 4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        before = [arms[n]["retention"].get(key, {}).get("before", {}).get("mean") or 0.0 for n in names]
        after = [arms[n]["retention"].get(key, {}).get("after", {}).get("mean") or 0.0 for n in names]
        positions = np.arange(len(names))
        axis.bar(positions - 0.2, before, width=0.4, label="before (step 0)")
        axis.bar(positions + 0.2, after, width=0.4, label="after")
        axis.set_xticks(positions, names, rotation=30, ha="right", fontsize=6)
        axis.set_title(key, fontsize=8)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "retention.png", dpi=110)
    written.append(out / "retention.png")
    plt.close(figure)
    return written


def report(config: CompareConfig) -> dict[str, Any]:
    """compare.json, compare.md and the plots from the runs recorded so far."""
    runs = {name: read_run(config.run_dir(name)) for name, *_ in config.run_names()
            if config.run_dir(name).has_metrics()}
    summary = summarize(config, runs)
    (config.out / "compare.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (config.out / "compare.md").write_text(markdown(summary))
    summary["plots"] = [str(p) for p in plot(summary, config.out)] if summary["arms"] else []
    return summary


