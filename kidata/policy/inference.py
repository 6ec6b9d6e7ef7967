"""How a policy samples, as its caller picks it (nothing here is stored in a run), and where it runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kidata.choices import InferencePrecision
from kidata.observation import check_num_steps

# the dtype each choice of InferencePrecision autocasts to: bfloat16 runs matmuls and attention in bf16
# under torch.autocast (PyTorch's mixed-precision inference); weights, norms, softmax and the flow's
# Euler integration stay float32
PRECISIONS: dict[InferencePrecision, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Inference:
    """``num_steps``: flow integration steps of ``sample_actions`` unless a call names its own.
    ``noise_scale`` scales the flow's starting noise (0: one deterministic chunk from the prior's
    mean); ``flow_samples`` > 1 returns the mean of that many chunks, sampled as one batch.
    ``precision``: ``float32`` or ``bfloat16`` (``PRECISIONS``). ``subtask``: generate the subtask
    before acting (None: when the source's recipe entry names ``annotations``, i.e. its rows were
    built with subtasks). Validated here, once: ``load`` builds it before any weight is read."""

    num_steps: int = 10
    noise_scale: float = 1.0
    flow_samples: int = 1
    precision: InferencePrecision = "float32"
    subtask: bool | None = None

    def __post_init__(self) -> None:
        check_num_steps(self.num_steps)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {tuple(PRECISIONS)}")
        if not self.noise_scale >= 0 or self.flow_samples < 1:
            raise ValueError(f"noise_scale must be >= 0 (got {self.noise_scale}) and flow_samples >= 1 "
                             f"(got {self.flow_samples})")
        object.__setattr__(self, "noise_scale", float(self.noise_scale))
        object.__setattr__(self, "flow_samples", int(self.flow_samples))


def default_device() -> str:
    """Where a policy runs unless told: the first CUDA device when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` (None: ``default_device()``) as a torch device this machine has, or one sentence."""
    try:
        resolved = torch.device(default_device() if device is None else device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device name such as cuda, cuda:1 or cpu ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA device that torch can use; pass device='cpu'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved
