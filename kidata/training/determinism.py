"""``train.deterministic``: the same run twice gives the same weights on the same GPU.

PyTorch's recipe (docs, "Reproducibility"): ``torch.use_deterministic_algorithms(True)`` (ops with
only a nondeterministic CUDA kernel then raise instead of silently varying; cuDNN picks
deterministic algorithms), cuDNN's autotuner off, and cuBLAS given a fixed workspace through
``CUBLAS_WORKSPACE_CONFIG`` (``:4096:8`` or ``:16:8``), without which cuBLAS matmuls on CUDA >= 10.2
are nondeterministic and, under the flag, raise. Seeds are the trainer's business already.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, deterministic kernels only (when ``enabled``); the previous settings and
    environment come back after it, so an in-process run does not change its caller's torch."""
    if not enabled:
        yield
        return
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if workspace is not None and workspace not in DETERMINISTIC_CUBLAS:
        raise ValueError(f"train.deterministic needs CUBLAS_WORKSPACE_CONFIG in {DETERMINISTIC_CUBLAS}, but the "
                         f"environment sets {workspace!r}: unset it or set one of those")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace or DETERMINISTIC_CUBLAS[0]
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2], previous[3]
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
