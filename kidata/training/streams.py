"""The training data as streams that outlive the number of processes.

A run's data order is ``S`` streams (``[data] streams``; 0 means one per process, the layout a
run had before streams existed). Stream ``s`` is the mixture's consumer ``s`` of ``S``: a
disjoint, seeded, resumable sequence of batches (``MixtureDataset`` with ``rank = s`` and
``world_size = S``). Every optimizer step takes ``grad_accum`` batches from every stream, and the
flow noise and time of a batch are a function of (seed, stream, step, micro-batch). The step's
global batch, its noise and its loss (the mean of the batches' losses) are therefore the same
on any number of processes dividing ``S``: process ``r`` of ``W`` runs streams
``r * S / W ... (r + 1) * S / W - 1`` as consecutive micro-batches, and the gradient average
over processes makes up the rest. A checkpoint stores one data state per stream, so a run saved
on N processes resumes on M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass(frozen=True)
class StreamLayout:
    """``streams`` in the run; ``owned`` the ones this process trains on, in order."""

    streams: int
    owned: tuple[int, ...]

    @classmethod
    def of(cls, requested: int, rank: int, world: int) -> StreamLayout:
        if requested == 0:
            return cls(world, (rank,))
        if requested % world:
            raise ValueError(f"[data] streams = {requested} is not a multiple of the {world} processes: each process "
                             f"trains on streams / processes of them; run on a divisor of {requested} processes")
        per_process = requested // world
        return cls(requested, tuple(range(rank * per_process, (rank + 1) * per_process)))

    def resumable_from(self, saved: int, requested: int, world: int, checkpoint: str) -> None:
        """Refuses a checkpoint whose data streams this run cannot continue."""
        if saved == self.streams:
            return
        if requested == 0:
            raise ValueError(
                f"{checkpoint} holds {saved} data stream(s), one per process of the run that wrote it, and this run "
                f"has {world} process(es): its weights, optimizer and EMA reshard to any number (they loaded), but a "
                f"stream's position cannot be split or merged; resume with {saved} process(es) (torchrun "
                f"--nproc_per_node {saved}), or start runs with [data] streams = S to resume them on any divisor of S")
        raise ValueError(f"{checkpoint} holds {saved} data stream(s) and this run's [data] streams is {requested}: "
                         "resume with the streams the run was started with")


class TrainStreams:
    """This process's streams: their loaders, the batches fed from each, and their states."""

    def __init__(self, layout: StreamLayout, open_stream: Callable[[int, dict | None], tuple],
                 states: list[dict] | None = None) -> None:
        self.layout = layout
        self.datasets, self._batches = [], []
        for stream in layout.owned:
            dataset, loader = open_stream(stream, states[stream] if states is not None else None)
            self.datasets.append(dataset)
            self._batches.append(iter(loader))
        self.fed = [0] * len(layout.owned)

    def micro_batches(self, accum: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """(stream, micro, batch) for one optimizer step: ``accum`` batches of each owned stream."""
        for micro in range(accum):
            for index, stream in enumerate(self.layout.owned):
                self.fed[index] += 1
                yield stream, micro, next(self._batches[index])

    def states(self, batch_size: int, num_workers: int) -> list[dict]:
        """Each owned stream's position after the batches fed so far (for this process's part of a checkpoint)."""
        return [dataset.state_after_batches(fed, batch_size, num_workers)
                for dataset, fed in zip(self.datasets, self.fed)]
