"""``[eval] metaworld``: the closed-loop evaluation a training run asks for, as the hook its caller
hands to ``train()`` (``kidata.training.closed_loop``): the live weights become a ``Policy``,
which runs in the scene the run's data was rendered in (``SceneSettings.from_recipe``), with the
run's ``[policy]`` (its replan unless ``[eval] metaworld`` names one); ``metaworld_success`` is the
mean over tasks, ``metaworld_success/<task>`` each task's, and with the FAST head
``metaworld_fast_invalid`` the share of chunks that did not decode exactly."""

from __future__ import annotations

import dataclasses

from kidata.envs.metaworld import MAX_EPISODE_STEPS, resolve_tasks
from kidata.eval.chunking import Chunking
from kidata.eval.metaworld import SceneSettings, evaluate_metaworld
from kidata.manifest import Manifest
from kidata.policy import Inference, Policy
from kidata.training.closed_loop import ClosedLoop, LiveWeights
from kidata.training.config import TrainConfig


def closed_loop_hook(config: TrainConfig) -> ClosedLoop | None:
    """What a caller of ``train()`` hands it for this config: the Meta-World evaluation when
    ``[eval] metaworld`` names tasks, None when it names none."""
    return MetaworldSuccess() if config.eval.metaworld else None


class MetaworldSuccess:
    """The hook: ``metaworld_success`` at the steps ``[eval]`` schedules; ``check`` refuses, before
    the first training step, what the first closed-loop evaluation would fail on."""

    def __call__(self, live: LiveWeights) -> dict:
        return metaworld_success(live)

    def check(self, config: TrainConfig, manifest: Manifest) -> None:
        """Refuses (ValueError naming ``[eval] metaworld`` and what to do) task names Meta-World
        lacks and a mixture whose acting source is no Meta-World source to take the scene from:
        each would otherwise end the run at its first evaluation, after its training steps."""
        settings = config.eval.metaworld
        try:
            resolve_tasks(settings.tasks)
        except (KeyError, ValueError) as error:
            raise ValueError(f"[eval] metaworld: {error.args[0]}") from None
        robots = [source.name for source in manifest.sources if source.kind == "robot"]
        scenes = [source.name for source in manifest.recipe.sources_read_by("metaworld")]
        if not robots or robots[0] not in scenes:  # the policy acts for the first robot source (``Policy``)
            acting = f"its first robot source {robots[0]!r} is" if robots else "it has no robot source, so it is"
            raise ValueError(f"[eval] metaworld: {acting} not a Meta-World source to act in (the mixture's sources: "
                             f"{manifest.source_names}): train on a Meta-World mixture (kidata build demo), or drop "
                             "[eval] metaworld (--eval.metaworld '{}')")


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
