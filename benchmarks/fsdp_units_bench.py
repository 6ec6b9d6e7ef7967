"""FSDP2 collectives of one training step, counted on one gloo process (CPU): how many times each
unit's whole weights are materialized (an all-gather on more than one process) in forward and in
backward, and how many reduce-scatters a step of 2 accumulated micro-batches issues.

    python benchmarks/fsdp_units_bench.py [--preset model/ki_tiny.toml]   (a shipped preset or a path)

Counts, not timings: they are the same on any machine and say what a GPU run pays per step.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="model/ki_tiny.toml")
    args = parser.parse_args()
    from support.model import fixed, make_batch
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group

    from kidata.model.config import ModelConfig
    from kidata.model.ki_model import KIModel
    from kidata.training import parallelize

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(probe.getsockname()[1]))
    dist.init_process_group("gloo", rank=0, world_size=1)
    gathers: collections.Counter = collections.Counter()
    reductions = [0]
    to_unsharded, reduce = _fsdp_param_group.FSDPParamGroup._to_unsharded, _fsdp_param_group.foreach_reduce

    def counted_gather(self):
        gathers[len(self.modules), type(self.modules[0]).__name__] += 1
        return to_unsharded(self)

    def counted_reduce(*a, **k):
        reductions[0] += 1
        return reduce(*a, **k)

    _fsdp_param_group.FSDPParamGroup._to_unsharded = counted_gather
    _fsdp_param_group.foreach_reduce = counted_reduce
    try:
        torch.manual_seed(0)
        model = KIModel(ModelConfig.load(args.preset, image_size=32, patch_size=8, action_horizon=4))
        wrapped = parallelize.shard_per_block(model, bf16=False)
        depth = model.config.depth
        batches = [make_batch(seed) for seed in (0, 1)]
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = getattr(parallelize, "gradient_sync", None)
            if sync is None:  # a checkout before gradient_sync: every micro-batch reduces
                loss = wrapped(batch, **fixed(batch))["loss"]
                forward = sum(c for (n, name), c in gathers.items() if "Layer" in name)
                loss.backward()
            else:
                with sync(wrapped, last=last):
                    loss = wrapped(batch, **fixed(batch))["loss"]
                    forward = sum(c for (n, name), c in gathers.items() if "Layer" in name)
                    loss.backward()
            if index == 0:
                layer_total = sum(c for (n, name), c in gathers.items() if "Layer" in name)
                print(f"decoder+expert layers ({depth} pairs), one micro-batch: {forward} gathers in forward "
                      f"({forward / depth:g} per pair), {layer_total - forward} in backward "
                      f"({(layer_total - forward) / depth:g} per pair)")
        from torch.distributed.fsdp import FSDPModule

        units = len({id(m._get_fsdp_state()) for m in model.modules() if isinstance(m, FSDPModule)})
        print(f"a step of 2 accumulated micro-batches: {reductions[0]} reduce-scatters over {units} FSDP units "
              f"({reductions[0] / units:g} per unit)")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
