"""A trained run as a robot policy: raw observation in, unnormalized action chunk out.

    policy = kidata.policy.load("runs/libero")
    chunk = policy.sample_actions({"images": {"base_0": rgb, "left_wrist_0": wrist},   # uint8 [H, W, 3]
                                   "state": proprio,                                    # float [S]
                                   "prompt": "put the bowl on the plate"})              # -> float64 [H, A]

Two halves: ``Policy`` (``robot_policy``) is pure — a model, the run's config and manifest, an
encoder, and how to sample (``Inference``) in; actions out; it reads no file — and ``load``
(``from_run``) is the factory that reads a run directory into one. The trainer's closed-loop
evaluation builds a ``Policy`` from the live model; ``kidata eval``, ``kidata serve`` and the demo
``load`` one. A Policy carries its run's ``[policy]`` settings (``Policy.settings``: action head,
replan, FAST fallback, temporal ensemble), which the evaluators and the server read from it.
"""

from __future__ import annotations

from kidata.lazy import lazy_exports

# the package's face, loaded on first use (importing the package stays cheap)
_EXPORTS = {
    "Policy": "kidata.policy.robot_policy",
    "Inference": "kidata.policy.inference",
    "PRECISIONS": "kidata.policy.inference",
    "default_device": "kidata.policy.inference",
    "resolve_device": "kidata.policy.inference",
    "ObservationError": "kidata.observation",
    "load": "kidata.policy.from_run",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
