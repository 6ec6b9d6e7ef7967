"""``kidata eval metaworld`` / ``kidata eval privileged``: closed-loop success of a run or a reference
policy, the inputs parity check, and the privileged-state baseline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from kidata.envs.metaworld import MAX_EPISODE_STEPS


def add_parser(commands) -> None:
    from kidata.choices import ActionHead, FastFallback, InferencePrecision
    from kidata.config import choices

    evaluate = commands.add_parser("eval", help="closed-loop evaluation of policies")
    eval_commands = evaluate.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)
    metaworld = eval_commands.add_parser(
        "metaworld", help="success rates in Meta-World",
        epilog="examples:\n  kidata eval metaworld --run demo-out/run --tasks reach-v3 push-v3 --episodes 20\n"
               "  kidata eval metaworld --policy expert --tasks MT10 --episodes 2\n"
               "  kidata eval metaworld --run demo-out/run --layouts training --episodes 10\n"
               "  kidata eval metaworld --run demo-out/run --check-parity")
    chooser = metaworld.add_mutually_exclusive_group(required=True)
    chooser.add_argument("--run", help="a kidata train run directory")
    chooser.add_argument("--policy", help="a reference policy (expert, random) or a server (ws://HOST:PORT, "
                                          "kidata serve --keys kidata)")
    metaworld.add_argument("--tasks", nargs="+", default=["MT10"], help="task names or MT10 / MT50")
    metaworld.add_argument("--episodes", type=int, default=5, help="episodes per task")
    metaworld.add_argument("--replan", type=int, help="actions executed per predicted chunk (default: the run's "
                                                      "[policy] replan, or the server's; 5 for expert / random)")
    metaworld.add_argument("--temporal-ensemble", metavar="DECAY",
                           help="execute the weighted mean of every chunk covering a step, weights exp(-DECAY i) from "
                                "the oldest (ACT's temporal ensembling; 0.01 in ACT), or 'off' for each chunk's first "
                                "--replan actions (default: the run's [policy] temporal_ensemble, or the server's)")
    metaworld.add_argument("--max-steps", type=int, default=MAX_EPISODE_STEPS, help="step budget of an episode")
    metaworld.add_argument("--num-steps", type=int, default=10, help="flow integration steps (1 or more)")
    metaworld.add_argument("--device", help="where a --run's model runs: cuda, cuda:1, cpu (default: cuda when present)")
    metaworld.add_argument("--precision", choices=choices(InferencePrecision), default="float32",
                           help="bfloat16: matmuls and attention in bf16 (autocast), the flow's integration in fp32")
    metaworld.add_argument("--noise-scale", type=float, default=1.0,
                           help="scale of the flow's starting noise (0: one deterministic chunk)")
    metaworld.add_argument("--flow-samples", type=int, default=1, help="act on the mean of this many flow chunks")
    metaworld.add_argument("--checkpoint", help="a checkpoint folder of the run, or its name (step_0000200; default: the "
                                                "newest complete one)")
    metaworld.add_argument("--no-ema", action="store_true", help="the trained weights, not their EMA")
    metaworld.add_argument("--action-head", choices=choices(ActionHead),
                           help="actions from the flow expert or from greedy FAST tokens (a ki model has both; "
                                "default: the run's [policy] action_head)")
    metaworld.add_argument("--fast-fallback", choices=choices(FastFallback),
                           help="for FAST tokens that do not decode exactly: the relaxed decode or the expert's chunk "
                                "(default: the run's [policy] fast_fallback)")
    metaworld.add_argument("--image-size", type=int, help="render size (default: the model's)")
    metaworld.add_argument("--source", help="the run's robot source whose statistics apply")
    metaworld.add_argument("--seed", type=int, default=0, help="the random policy's seed")
    metaworld.add_argument("--goal-marker-scale", type=float, default=1.0,
                           help="goal marker size for --policy runs (a --run takes its recipe's)")
    metaworld.add_argument("--layouts", choices=("evaluation", "training"), default="evaluation",
                           help="start episodes from layouts apart from the training rollouts', or from the run's own "
                                "training episodes' layouts (--run: does the policy fit what it saw?)")
    metaworld.add_argument("--check-parity", action="store_true",
                           help="compare the model inputs of held-out samples (data path) with the live policy's; "
                                "--episodes samples")
    metaworld.add_argument("--out", help="folder for contact sheets, action plots and metaworld_eval.json (default: "
                                         "RUN/metaworld with --run; nothing written for --policy without it)")
    metaworld.set_defaults(handler=metaworld_command)
    privileged = eval_commands.add_parser(
        "privileged", help="an MLP on the simulator's full state, trained on a recipe's Meta-World episodes: "
                           "what the demonstrations support without perception",
        epilog="example:\n  kidata eval privileged --recipe metaworld --episodes 20 --out privileged")
    privileged.add_argument("--recipe", required=True, help="the recipe whose Meta-World episodes train the MLP")
    privileged.add_argument("--source", help="the recipe's metaworld source (default: the first)")
    privileged.add_argument("--steps", type=int, default=3000, help="training steps of the MLP")
    privileged.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    privileged.add_argument("--replan", type=int, default=5, help="actions executed per predicted chunk")
    privileged.add_argument("--max-steps", type=int, default=MAX_EPISODE_STEPS, help="step budget of an episode")
    privileged.add_argument("--out", help="folder for privileged.json and the evaluator's files")
    privileged.set_defaults(handler=privileged_command)


def metaworld_command(args: argparse.Namespace) -> int:
    from kidata.eval.chunking import Chunking
    from kidata.eval.metaworld import ExpertPolicy, RandomPolicy, SceneSettings, evaluate_metaworld

    if args.run:
        from kidata import policy as policies

        policy = policies.load(args.run, source=args.source, checkpoint=args.checkpoint, use_ema=not args.no_ema,
                               action_head=args.action_head, noise_scale=args.noise_scale,
                               flow_samples=args.flow_samples, fast_fallback=args.fast_fallback,
                               num_steps=args.num_steps, device=args.device, precision=args.precision)
        if args.check_parity:
            from kidata.eval.parity import check_parity

            report = check_parity(policy, samples=args.episodes)
            print(json.dumps(report, indent=1, sort_keys=True))
            print("parity: the model sees the same inputs in training and in the simulator" if report["ok"] else
                  "parity: MISMATCH - the tensors marked ok=false differ between the data path and the live policy")
            return 0 if report["ok"] else 1
        try:  # before any simulator starts: a run trained on other data has no Meta-World scene to act in
            scene = SceneSettings.from_recipe(policy.manifest.recipe, policy.source)
        except ValueError as error:
            raise SystemExit(f"kidata eval metaworld --run {args.run}: {error}") from None
        if args.out is None:
            args.out = str(Path(args.run) / "metaworld")
        chunk_policy = policy
        if args.layouts == "training":
            from kidata.eval.metaworld import training_layouts

            try:
                seed, indices = training_layouts(policy.manifest.recipe, args.tasks, args.episodes, policy.source)
            except ValueError as error:
                raise SystemExit(f"kidata eval metaworld --layouts training: {error}") from None
    else:
        if args.check_parity:
            raise SystemExit("kidata eval metaworld: --check-parity needs --run")
        scene = SceneSettings(goal_marker_scale=args.goal_marker_scale)
        if args.policy.startswith(("ws://", "wss://")):
            from kidata.recipe import Recipe
            from kidata.serving.client import RemotePolicy

            chunk_policy = RemotePolicy(args.policy, api_key=os.environ.get("KIDATA_API_KEY"))
            try:  # the served run's scene, as for --run
                recipe = Recipe.from_canonical(chunk_policy.metadata["recipe"], origin=args.policy)
                scene = SceneSettings.from_recipe(recipe, chunk_policy.metadata["source"])
            except (KeyError, ValueError):
                pass
        elif args.policy in ("expert", "random"):
            chunk_policy = ExpertPolicy() if args.policy == "expert" else RandomPolicy(seed=args.seed)
        else:
            raise SystemExit(f"--policy {args.policy!r}: expert, random or a ws:// server address")
        if args.layouts == "training":
            raise SystemExit("kidata eval metaworld: --layouts training needs --run (the layouts are its build's)")
    if args.image_size is not None:  # 0 too: refused by the evaluator, not silently the default
        scene = dataclasses.replace(scene, image_size=args.image_size)
    layouts = {"seed": seed, "episode_indices": indices} if args.layouts == "training" else {}
    chunking = Chunking.of(chunk_policy)  # a run's (or the served run's) [policy]; a reference policy's defaults
    if args.replan is not None:
        chunking = dataclasses.replace(chunking, replan=args.replan)
    if args.temporal_ensemble is not None:
        chunking = dataclasses.replace(chunking, ensemble=_ensemble_decay(args.temporal_ensemble))
    result = evaluate_metaworld(chunk_policy, args.tasks, episodes=args.episodes, chunking=chunking,
                                max_steps=args.max_steps, scene=scene, out=args.out, progress=True, **layouts)
    print(json.dumps({k: v for k, v in result.items() if k != "episodes"}, indent=2, sort_keys=True))
    if args.out:
        print(f"contact sheets, action plots and metaworld_eval.json in {args.out}", file=sys.stderr)
    return 0


def _ensemble_decay(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)  # a NaN or infinite decay is refused by ChunkExecutor before any simulator starts
    except ValueError:
        raise SystemExit(f"kidata eval metaworld --temporal-ensemble {text!r}: a decay (e.g. 0.01) or 'off'") from None


def privileged_command(args: argparse.Namespace) -> int:
    from kidata.eval.privileged import run_baseline

    report = run_baseline(args.recipe, episodes=args.episodes, replan=args.replan, max_steps=args.max_steps,
                          steps=args.steps, source_name=args.source, out=args.out)
    result = report["closed_loop"]
    print(json.dumps({"episodes_trained": report["episodes_trained"], "samples": report["samples"],
                      "seconds_collect_and_train": report["seconds_collect_and_train"],
                      "success_rate": result["success_rate"], "mean_success_rate": result["mean_success_rate"]},
                     indent=2, sort_keys=True))
    return 0
