"""Closed-loop evaluation during training, as a hook the caller hands to ``train()``.

Training sits below the policy and the evaluators (imports run one way), so it cannot build a
policy or start a simulator itself. The caller that starts training (``kidata train``, ``kidata
compare``, the demo) builds the hook from the config (``kidata.eval.during_training``); the trainer
calls it on rank 0 at the evaluations ``[eval]`` schedules (``EvalConfig.closed_loop_at``) with the
weights a policy loaded from the run would have (``LiveWeights``), and logs the metrics it returns
beside the held-out ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from kidata.manifest import Manifest
from kidata.model.ki_model import KIModel
from kidata.training.config import TrainConfig
from kidata.training.run_dir import RunDir


@dataclass(frozen=True)
class LiveWeights:
    """What a closed-loop hook evaluates: the training model holding the weights ``kidata.policy.load``
    would pick at this step (the EMA's, when the run keeps one), the run's config and manifest,
    the run directory (``RunDir``: its action tokenizer) and the device the model is on."""

    model: KIModel
    config: TrainConfig
    manifest: Manifest
    run: RunDir
    device: torch.device
    step: int


# the hook: the live weights in, metrics out (flat name -> number, logged as they are). A hook may
# also have ``check(config, manifest)``: called before the run is touched, it refuses what its
# first evaluation would fail on (a mixture it cannot evaluate, a setting out of range), so the
# run does not find out after its training steps.
ClosedLoop = Callable[[LiveWeights], dict]


def check_hook(config: TrainConfig, closed_loop: ClosedLoop | None, manifest: Manifest | None = None) -> None:
    """Refuses a config that asks for closed-loop evaluation when no hook was handed in, and with
    ``manifest`` what the hook's own ``check`` refuses for this config and mixture."""
    if config.eval.metaworld and closed_loop is None:
        raise ValueError("the config's [eval] metaworld asks for closed-loop evaluation and train() was handed no "
                         "closed_loop hook: pass closed_loop=kidata.eval.during_training.closed_loop_hook(config), "
                         "as kidata train does")
    check = getattr(closed_loop, "check", None)
    if manifest is not None and check is not None:
        check(config, manifest)


@contextlib.contextmanager
def ema_weights(model: KIModel, ema: dict[str, torch.Tensor] | None) -> Iterator[KIModel]:
    """The model with its EMA copied into the parameters the EMA keeps (as the policy would load
    them), the trained values put back on exit; the model as it is without an EMA."""
    if ema is None:
        yield model
        return
    live = {n: p.detach().clone() for n, p in model.named_parameters() if n in ema}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in ema:
                parameter.copy_(ema[name].to(parameter.dtype))
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in live:
                    parameter.copy_(live[name])
