"""``make demo``: the main job on the embedded default, with no download.

1. Builds ``pipelines/demo.toml``: Meta-World expert rollouts (3 tasks, 2 cameras) and scene
   questions answered from simulator state -> statistics, a fitted FAST tokenizer, shards,
   manifest and report (written to files; a contact sheet of decoded samples in ``inspect/``).
2. Trains the tiny KI preset (``model/ki_tiny.toml``) on it on the CPU and evaluates on the held-out
   split: the action error next to predicting the mean action.
3. Runs the trained policy closed-loop in Meta-World on the same tasks and prints its success rate
   per task next to the scripted expert's and random actions'.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
from pathlib import Path

from kidata import assets
from kidata.manifest import BuildDir

DEMO_RECIPE = assets.ROOT / "pipelines" / "demo.toml"
TINY_PRESET = assets.ROOT / "model" / "ki_tiny.toml"
# 5000 steps: 290 s of training on 2 CPU cores, then 0.68 mean success with the FAST head over
# 20 episodes per task (docs/results/metaworld.md, "`make demo`")
DEMO_TRAIN_STEPS = 5000
DEMO_ACTION_HEAD = "fast"  # at this size the backbone's FAST tokens act better than the small expert (same page)
DEMO_EPISODES = 20


def run_demo(out: Path, *, workers: int = 2, train_steps: int | None = None, eval_episodes: int = DEMO_EPISODES) -> dict:

    from kidata import policy as policies
    from kidata.eval.during_training import closed_loop_hook
    from kidata.eval.metaworld import ExpertPolicy, RandomPolicy, SceneSettings, evaluate_metaworld
    from kidata.pipelines.build import build
    from kidata.pipelines.inspect_build import inspect_build
    from kidata.pipelines.recipe import load_recipe
    from kidata.training.config import load
    from kidata.training.trainer import train

    recipe = load_recipe(DEMO_RECIPE)
    print(f"1/3 building {DEMO_RECIPE.name} into {out} (Meta-World rollouts rendered on the CPU) ...", flush=True)
    manifest = build(recipe, str(out), workers=workers, progress=True)
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # the decoded samples go to their file
        described = inspect_build(str(out), samples=1, save=str(out / "inspect"))
    (out / "inspect").mkdir(exist_ok=True)
    (out / "inspect" / "samples.txt").write_text(printed.getvalue() + str(described))

    run = out / "run"
    steps = train_steps if train_steps is not None else DEMO_TRAIN_STEPS
    config = load(TINY_PRESET, {"data": {"manifest": BuildDir.at(str(out)).manifest_path}, "train": {"steps": steps},
                                "eval": {"every": steps}, "checkpoint": {"every": max(1, steps // 2)},
                                "policy": {"action_head": DEMO_ACTION_HEAD}})
    if run.exists():  # a demo run is disposable: a rerun (other steps, newer code) trains afresh
        print(f"removing the previous demo run {run}", flush=True)
        shutil.rmtree(run)
    print(f"\n2/3 training {TINY_PRESET.name} for {config.train.steps} steps into {run} ...", flush=True)
    report = train(config, run, closed_loop=closed_loop_hook(config))

    tasks = [source.options["tasks"] for source in recipe.sources if source.reader == "metaworld"][0]
    print(f"\n3/3 closed-loop evaluation in Meta-World ({eval_episodes} episodes per task) ...", flush=True)
    loaded = policies.load(run)
    scene = SceneSettings.from_recipe(loaded.manifest.recipe)
    trained = evaluate_metaworld(loaded, tasks, episodes=eval_episodes, scene=scene, out=run / "metaworld",
                                 progress=True)
    upper = evaluate_metaworld(ExpertPolicy(), tasks, episodes=eval_episodes, scene=scene)
    lower = evaluate_metaworld(RandomPolicy(seed=0), tasks, episodes=eval_episodes, scene=scene)
    print(summary(trained, upper, lower, report.get("eval", {}), out, run, loaded.action_head))
    return {"manifest": manifest, "train": report, "metaworld": trained, "expert": upper, "random": lower}


def summary(trained: dict, expert: dict, random: dict, held_out: dict, out: Path, run: Path, action_head: str) -> str:
    """The demo's last screen: success per task with its binomial standard error, the held-out action
    error next to predicting the mean action, and where the files are."""
    episodes = trained["episodes_per_task"]
    lines = [f"\nsuccess over {episodes} episodes per task ({action_head} head / scripted expert / random actions):"]
    for task, rate in trained["success_rate"].items():
        lines.append(f"  {task:28s} {rate:.2f} +- {math.sqrt(rate * (1 - rate) / episodes):.2f} / "
                     f"{expert['success_rate'][task]:.2f} / {random['success_rate'][task]:.2f}")
    mean = trained["mean_success_rate"]
    spread = math.sqrt(mean * (1 - mean) / (episodes * len(trained["success_rate"])))
    lines.append(f"  {'mean':28s} {mean:.2f} +- {spread:.2f} / {expert['mean_success_rate']:.2f} / "
                 f"{random['mean_success_rate']:.2f}")
    if "action_mse" in held_out and "action_mse_mean_baseline" in held_out:
        lines.append(f"held-out action error (MSE, robot units): {held_out['action_mse']:.4f} flow expert, "
                     f"{held_out.get('fast_action_mse', float('nan')):.4f} FAST tokens; predicting the mean action: "
                     f"{held_out['action_mse_mean_baseline']:.4f}")
    lines.append(f"files: build {out}/ (manifest.json, build_report.json, inspect/), run {run}/ (report.json, "
                 f"metrics.jsonl, loss_curves.png), closed loop {run}/metaworld/ (metaworld_eval.json, contact sheets)")
    return "\n".join(lines)
