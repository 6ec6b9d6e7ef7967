"""``[eval] metaworld``: the closed-loop evaluation a training run asks for, as the hook its caller
hands to ``train()`` (``kidata.training.closed_loop``): the live weights become a ``Policy``,
which runs in the scene the run's data was rendered in (``SceneSettings.from_recipe``), with the
run's ``[policy]`` (its replan unless ``[eval] metaworld`` names one); ``metaworld_success`` is the
mean over tasks, ``metaworld_success/<task>`` each task's, and with the FAST head
``metaworld_fast_invalid`` the share of chunks that did not decode exactly."""

from __future__ import annotations

import dataclasses

from kidata.envs.metaworld import MAX_EPISODE_STEPS
from kidata.eval.chunking import Chunking
from kidata.eval.metaworld import SceneSettings, evaluate_metaworld
from kidata.policy import Inference, Policy
from kidata.training.closed_loop import ClosedLoop, LiveWeights
from kidata.training.config import TrainConfig


def closed_loop_hook(config: TrainConfig) -> ClosedLoop | None:
    """What a caller of ``train()`` hands it for this config: the Meta-World evaluation when
    ``[eval] metaworld`` names tasks, None when it names none."""
    return metaworld_success if config.eval.metaworld else None


def metaworld_success(live: LiveWeights) -> dict:
    """Success rates of the live weights in Meta-World, rounded as they are logged."""
    config, settings = live.config, live.config.eval.metaworld
    encoder = live.run.encoder(live.manifest)
    policy = Policy(live.model, config, live.manifest, encoder, device=live.device,
                    inference=Inference(num_steps=config.eval.num_steps))
    chunking = Chunking.of(policy)
    if settings.replan is not None:
        chunking = dataclasses.replace(chunking, replan=settings.replan)
    episodes = settings.episodes if settings.episodes is not None else 5
    max_steps = settings.max_steps if settings.max_steps is not None else MAX_EPISODE_STEPS
    outcome = evaluate_metaworld(policy, settings.tasks, episodes=episodes, chunking=chunking, max_steps=max_steps,
                                 scene=SceneSettings.from_recipe(live.manifest.recipe, policy.source))
    chunks = policy.counters["fast_chunks"]
    invalid = {"metaworld_fast_invalid": round(policy.counters["fast_invalid"] / chunks, 4)} if chunks else {}
    return {"metaworld_success": round(outcome["mean_success_rate"], 4), **invalid,
            **{f"metaworld_success/{task}": round(rate, 4) for task, rate in outcome["success_rate"].items()}}
