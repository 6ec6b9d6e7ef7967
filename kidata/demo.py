"""``make demo``: the main job on the embedded default, with no download.

1. Builds ``pipelines/demo.toml``: Meta-World expert rollouts (3 tasks, 2 cameras) and scene
   questions answered from simulator state -> statistics, a fitted FAST tokenizer, shards,
   manifest and report; prints a few decoded samples.
2. Trains the tiny KI preset (``model/ki_tiny.toml``) on it on the CPU and evaluates on the held-out
   split (action MSE, FAST decoding, VLM retention).
3. Runs the trained policy closed-loop in Meta-World on the same tasks and prints success rates
   next to the scripted expert's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kidata import assets

DEMO_RECIPE = assets.ROOT / "pipelines" / "demo.toml"
TINY_PRESET = assets.ROOT / "model" / "ki_tiny.toml"
DEMO_TRAIN_STEPS = 3500  # ~5 min at 11 steps/s on 2 CPU cores (1200 steps: reach 0.4, push 0, button 0; docs/results/metaworld.md)
MAX_STEPS = 300  # the same episode budget as `kidata eval metaworld` (the demo used 150)


def run_demo(out: Path, *, workers: int = 2, train_steps: int | None = None, eval_episodes: int = 5) -> dict:
    from kidata import policy as policies
    from kidata.eval.metaworld import ExpertPolicy, RandomPolicy, SceneSettings, evaluate_metaworld
    from kidata.pipelines.build import build
    from kidata.pipelines.inspect_build import inspect_build
    from kidata.pipelines.recipe import load_recipe
    from kidata.training.config import TrainConfig
    from kidata.training.trainer import train

    recipe = load_recipe(DEMO_RECIPE)
    print(f"1/3 building {DEMO_RECIPE.name} into {out} (Meta-World rollouts are rendered on the CPU) ...", flush=True)
    manifest = build(recipe, str(out), workers=workers, progress=True)
    print(inspect_build(str(out), samples=1, save=str(out / "inspect")))
    print(json.dumps(json.loads((out / "build_report.json").read_text()), indent=1)[:1500])

    run = out / "run"
    steps = train_steps if train_steps is not None else DEMO_TRAIN_STEPS
    overrides = ["--data.manifest", json.dumps(str(out / "manifest.json")), "--train.steps", str(steps),
                 "--eval.every", str(max(1, steps // 3)), "--checkpoint.every", str(max(1, steps // 3))]
    config = TrainConfig.load(TINY_PRESET, overrides)
    if run.exists():  # a demo run is disposable: a rerun (other steps, newer code) trains afresh
        print(f"removing the previous demo run {run}", flush=True)
        shutil.rmtree(run)
    print(f"\n2/3 training {TINY_PRESET.name} for {config.train.steps} steps into {run} ...", flush=True)
    report = train(config, run)

    tasks = [source.options["tasks"] for source in recipe.sources if source.reader == "metaworld"][0]
    print(f"\n3/3 closed-loop evaluation in Meta-World ({eval_episodes} episodes per task) ...", flush=True)
    loaded = policies.load(run)
    scene = SceneSettings.from_recipe(loaded.manifest.recipe)
    trained = evaluate_metaworld(loaded, tasks, episodes=eval_episodes, replan=loaded.config.policy.replan,
                                 max_steps=MAX_STEPS, scene=scene, out=run / "metaworld",
                                 ensemble=loaded.config.policy.temporal_ensemble)
    upper = evaluate_metaworld(ExpertPolicy(), tasks, episodes=eval_episodes, max_steps=MAX_STEPS, scene=scene)
    lower = evaluate_metaworld(RandomPolicy(seed=0), tasks, episodes=eval_episodes, max_steps=MAX_STEPS, scene=scene)
    print(f"\nsuccess rate per task over {eval_episodes} episodes (trained tiny policy / scripted expert / random):")
    for task in trained["success_rate"]:
        print(f"  {task:28s} {trained['success_rate'][task]:.2f} / {upper['success_rate'][task]:.2f} / "
              f"{lower['success_rate'][task]:.2f}")
    print(f"\nbuild: {out}/manifest.json, report {out}/build_report.json, FAST tokenizer + report in "
          f"{out}/fast_tokenizer/, sample pictures in {out}/inspect/")
    print(f"training: {run}/report.json, loss curves {report.get('loss_curves')}, held-out metrics "
          f"{json.dumps(report.get('eval', {}))}")
    print(f"closed loop: {run}/metaworld/ (metaworld_eval.json, contact sheets)")
    return {"manifest": manifest, "train": report, "metaworld": trained, "expert": upper, "random": lower}
