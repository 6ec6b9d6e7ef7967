"""One rank of tests/training/test_sharded_checkpoints.py (run by ``torch.distributed.run``, 2 gloo processes):
builds the tiny preset under FSDP2, writes a sharded checkpoint, resumes from it and from a
whole-file checkpoint, and records what each rank did into OUT/rank<r>.json (+ tensors on rank 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import safetensors.torch
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from kidata.training import checkpoint, initialize
from kidata.training.config import TrainConfig, load
from kidata.training.parallelize import Distributed, full_state_dicts, restore_shards, sharded_state_dicts

OVERRIDES = {"model": {"image_size": 32, "action_horizon": 4}, "train": {"fsdp": True}}


def config() -> TrainConfig:
    return load("ki_tiny", OVERRIDES)


def refuse(what: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"rank {dist.get_rank()} {what}")
    return refused


def trained(env: Distributed, built: Path | None = None) -> tuple:
    """The model built as the trainer builds it (its whole weights written to ``built`` by rank 0),
    after one AdamW step, with an EMA of its shards."""
    model, _ = initialize.build_sharded(config(), env.device, env.world, bf16=False)
    if built is not None:
        weights, _ = full_state_dicts(model, torch.optim.SGD(model.parameters()))
        if env.rank == 0:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(built))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for index, parameter in enumerate(model.parameters()):
        parameter.grad = torch.full_like(parameter, 0.01 * (index + 1))
    optimizer.step()
    ema = {name: parameter.detach().clone().float() * 0.5 for name, parameter in model.named_parameters()}
    return model, optimizer, ema


def whole(model, optimizer, ema) -> dict[str, torch.Tensor]:
    """Every tensor gathered whole on rank 0 (a collective; empty on the other ranks), keyed by part."""
    model_state, optimizer_state = full_state_dicts(model, optimizer)
    averaged = {f"ema/{k}": v.full_tensor() for k, v in ema.items()}
    if dist.get_rank() != 0:
        return {}
    tensors, _ = checkpoint.optimizer_tensors(optimizer_state)
    out = {f"model/{k}": v for k, v in model_state.items()} | {f"optimizer/{k}": v for k, v in tensors.items()}
    return out | averaged


def main(out: Path) -> None:
    env = Distributed()
    record: dict = {}
    if env.rank != 0:  # only rank 0 may build the whole model
        initialize.initialized_model = refuse("built the whole model")
    model, optimizer, ema = trained(env, built=out / "built.safetensors")
    record["local_numel"] = sum(p.to_local().numel() for p in model.parameters())
    record["numel"] = sum(p.numel() for p in model.parameters())
    state = whole(model, optimizer, ema)
    if env.rank == 0:
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "trained.safetensors"))

    # a sharded checkpoint: each rank hashes its share, rank 0 the rest
    run = out / "run"
    temporary = Path(env.gather(str(checkpoint.begin_checkpoint(run, 1)) if env.rank == 0 else None)[0])
    model_state, optimizer_state = sharded_state_dicts(model, optimizer)
    rest = checkpoint.write_shards(temporary, model=model_state, optimizer=optimizer_state, ema=ema)
    dist.barrier()
    share = checkpoint.hash_share(temporary, env.rank, env.world)
    record["hashed"] = sorted(share)
    hashed = {name: entry for part in env.gather(share) for name, entry in part.items()}
    if env.rank == 0:
        hashed_by_finish = []
        sha256 = checkpoint.file_sha256
        checkpoint.file_sha256 = lambda path: hashed_by_finish.append(path.name) or sha256(path)
        checkpoint.finish_checkpoint(run, 1, temporary, trainer={"step": 1}, optimizer_rest=rest, keep=2, hashed=hashed)
        checkpoint.file_sha256 = sha256
        record["hashed_by_finish"] = hashed_by_finish
        # the same state as whole files, as a one-process run writes it
        single = out / "single"
        temporary = checkpoint.begin_checkpoint(single, 1)
        for part in ("model", "optimizer", "ema"):
            save_file({k.split("/", 1)[1]: v.contiguous() for k, v in state.items() if k.startswith(part + "/")},
                      str(temporary / f"{part}.safetensors"))
        checkpoint.finish_checkpoint(single, 1, temporary, trainer={"step": 1}, optimizer_rest=rest, keep=2)
    dist.barrier()

    # resuming: from the shards and from the whole files, never reading a whole file at once
    safetensors.torch.load_file = refuse("read a whole safetensors file")
    for layout, path in (("sharded", run / "checkpoints" / "step_0000001"),
                         ("whole", out / "single" / "checkpoints" / "step_0000001")):
        again, optimizer_again, ema_again = trained(env)
        optimizer_again.step()  # other weights and moments than the checkpoint's, and another EMA
        ema_again = {name: value * 2 for name, value in ema_again.items()}
        record[f"before_{layout}"] = sum(torch.equal(v, state[k]) for k, v in whole(again, optimizer_again, ema_again).items())
        restore_shards(again, optimizer_again, ema_again, path, json.loads((path / "trainer.json").read_text())["optimizer"])
        restored = whole(again, optimizer_again, ema_again)
        record[f"restored_{layout}"] = sum(torch.equal(restored[k], state[k]) for k in state)
        record[f"differs_{layout}"] = sorted(k for k in state if not torch.equal(restored[k], state[k]))
    (out / f"rank{env.rank}.json").write_text(json.dumps(record))
    env.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
