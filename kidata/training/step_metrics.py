"""A training step's numbers kept on the device and read by the host at chosen steps only.

Reading a device value on the host (``float(t)``, ``t.item()``, ``t.cpu()``) waits for every
kernel queued before it: a read per micro-batch keeps the host from queuing the next batch
while the accelerator works. So the losses, gradient norm and token counts accumulate on the
device, and the trainer reads them in one transfer at the steps that need them (a log line, a
checkpoint, an evaluation, the last step); that read also checks every step since the previous one
for a non-finite loss, so a checkpoint is never written after a diverged step.
"""

from __future__ import annotations

import torch

LOSS_KEYS = ("loss", "flow_loss", "fast_loss")


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops, naming the step and the last good checkpoint."""


class DeviceMetrics:
    """Losses of the current step (mean over its micro-batches, float32 0-d tensors on the
    device), its gradient norm, the non-padding tokens since the last read, and the first step
    with a non-finite loss since the last read (0: none)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.losses: dict[str, torch.Tensor] = {}
        self.grad_norm = torch.zeros((), device=device)
        self.tokens = torch.zeros((), device=device)
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_losses = torch.zeros(len(LOSS_KEYS), device=device)

    def begin_step(self) -> None:
        self.losses = {}

    def add_micro_batch(self, out: dict, micro_batches: int, token_mask: torch.Tensor) -> None:
        """``out``: the model's outputs for one micro-batch; ``token_mask`` bool [B, L] on the device."""
        for key in LOSS_KEYS:
            if key in out:
                value = out[key].detach().float() / micro_batches
                self.losses[key] = self.losses[key] + value if key in self.losses else value
        self.tokens += token_mask.sum()

    def end_step(self, step: int, grad_norm: torch.Tensor) -> None:
        """``step``: the step just finished, counted from 1; ``grad_norm``: 0-d, before clipping."""
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor (reduced over the ranks, on the device)
            grad_norm = grad_norm.full_tensor()
        self.grad_norm = grad_norm.detach().float()
        stacked = torch.stack([self.losses.get(key, torch.zeros((), device=self.device)) for key in LOSS_KEYS])
        newly_bad = (~torch.isfinite(stacked).all()) & (self.first_bad == 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.bad_losses = torch.where(newly_bad, stacked, self.bad_losses)

    def read(self, env, last_good) -> tuple[dict[str, float], int]:
        """One host read (and, on several processes, one all-reduce): the current step's losses and
        gradient norm averaged over the processes, and the tokens since the previous read summed.
        Raises TrainingDiverged, on every process alike, when any process saw a non-finite loss."""
        keys = [key for key in LOSS_KEYS if key in self.losses]
        vector = torch.stack([*(self.losses[key] for key in keys), self.grad_norm, self.tokens,
                              (self.first_bad > 0).float()])
        values = env.all_reduce(vector).tolist()
        self.tokens = torch.zeros((), device=self.device)
        if values[-1] > 0:
            never = torch.iinfo(torch.int64).max
            first = env.all_reduce(torch.where(self.first_bad > 0, self.first_bad, never), op="min")
            mine = dict(zip(LOSS_KEYS, self.bad_losses.tolist())) if int(self.first_bad) == int(first) else {}
            raise TrainingDiverged(f"non-finite loss at step {int(first)}"
                                   + (f" ({ {k: v for k, v in mine.items() if k in keys} })" if mine else "")
                                   + f"; last good checkpoint: {last_good if last_good else 'none (no checkpoint written yet)'}")
        world = env.world
        metrics = {key: value / world for key, value in zip(keys, values)}
        metrics["grad_norm"] = values[len(keys)] / world
        return metrics, round(values[len(keys) + 1])
