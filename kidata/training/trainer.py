"""``kidata train``: a built mixture -> a trained KI policy, on one CPU or under torchrun.

Run directory (``RUN``): ``config.json`` (the resolved config), ``manifest.json`` and
``fast_tokenizer/`` (copies of what the data was built with: the policy needs them),
``metrics.jsonl``, ``tensorboard/``, ``checkpoints/step_NNNNNNN/`` + ``checkpoints/latest``,
``eval.json``, ``report.json`` and ``loss_curves.png`` at the end.

Determinism: the model's initialization, the data streams (resumable by position; see
``streams``), the flow noise and time of every (stream, step, micro-batch) and augmentation are
all seeded, so a resumed run repeats an uninterrupted run's losses step for step — with
``[data] streams`` set, on another number of processes too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from kidata.hashing import json_sha256, stable_seed
from kidata.loader.collate import Augment, collate
from kidata.loader.mixture import MixtureDataset, MixtureSettings
from kidata.manifest import BuildDir, Manifest
from kidata.model.ki_model import KIModel, sample_flow_inputs
from kidata.training.checkpoint import (
    begin_checkpoint,
    finish_checkpoint,
    hash_share,
    save_checkpoint,
    write_shards,
)
from kidata.training.closed_loop import ClosedLoop, LiveWeights, check_hook, ema_weights
from kidata.training.compatible import check_compatible  # noqa: F401  (public here)
from kidata.training.config import TrainConfig
from kidata.training.determinism import deterministic_algorithms
from kidata.training.held_out import HeldOutMetrics
from kidata.training.initialize import build_sharded, check_init_tokenizer, initialized_model
from kidata.training.metrics import MetricsLogger, drop_unfinished_attempt, truncate_metrics
from kidata.training.parallelize import (
    Distributed,
    full_state_dicts,
    gradient_sync,
    local_parameters_sha256,
    parallelize,
    restore_shards,
    sharded_state_dicts,
)
from kidata.training.resume import (  # noqa: F401  (public here)
    RESUMABLE_CHANGES,
    ResumeRefused,
    check_same_mixture,
    config_changes,
    keep_schedule,
    resume_point,
)
from kidata.training.run_dir import RunDir
from kidata.training.step_metrics import DeviceMetrics, TrainingDiverged  # noqa: F401  (public here)
from kidata.training.streams import StreamLayout, TrainStreams


def flow_inputs(seed: int, stream: int, step: int, micro: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise [B, H, A] and time [B] of one micro-batch, a function of its coordinates only."""
    return sample_flow_inputs(shape, torch.Generator().manual_seed(stable_seed(seed, stream, step, micro)))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to lr, cosine decay to final_lr_fraction x lr (step counts from 0)."""
    peak, schedule = config.optim.lr, config.schedule
    if step < schedule.warmup_steps:
        return peak * (step + 1) / schedule.warmup_steps
    decay = (schedule.decay_steps or config.train.steps) - schedule.warmup_steps
    progress = min(1.0, (step - schedule.warmup_steps) / max(1, decay))
    floor = peak * schedule.final_lr_fraction
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def read_at(config: TrainConfig, step: int) -> bool:
    """Whether the host reads the step's device metrics after ``step`` (counted from 1): at log
    steps, and before a checkpoint or an evaluation (a diverged run must not write one)."""
    return (step % config.log.every == 0 or step == config.train.steps or step % config.checkpoint.every == 0
            or bool(config.eval.every and step % config.eval.every == 0))


def _prepare_run(run: RunDir, config: TrainConfig, manifest: Manifest, build: BuildDir, resume: bool) -> None:
    """Copies the build's manifest and action tokenizer into RUN; refuses a resume on other data."""
    if resume and run.manifest_file.exists():
        before = run.manifest()
        manifest.check_expectations({"text_sha256": before.text_tokenizer.sha256,
                                     "fast_sha256": before.action_tokenizer.sha256,
                                     "encoding": before.encoding.to_json()})
        check_same_mixture(before, manifest, run.manifest_file)
    run.create(config, manifest, build)


def _loader(config: TrainConfig, manifest_path: str, split: str, rank: int, world: int, manifest: Manifest,
            *, batch_size: int, workers: int, augment: Augment | None, state: dict | None = None,
            pin_memory: bool = False):
    """The training stream (the config's weights and seed), or for ``split="val"`` the held-out
    batches every run of a mixture is measured on: the manifest's own weights and seed 0, whatever
    the run trains on (so a robot-only run is still asked the VLM questions a co-trained one is,
    and seeds differ in training only). Training batches are cut to their longest row on the host
    (collate's ``trim_padding``); ``pin_memory`` (on CUDA) makes their copy to the device asynchronous."""
    encoding = manifest.encoding
    held_out = split == "val"
    settings = MixtureSettings(split=split, weights=None if held_out else dict(config.data.weights) or None,
                               balance=config.data.balance, seed=0 if held_out else config.train.seed,
                               shuffle_buffer=config.data.shuffle_buffer, verify_shards=config.data.verify_shards)
    dataset = MixtureDataset(BuildDir(manifest_path), settings, rank=rank, world_size=world, augment=augment)
    if state is not None:
        dataset.load_state_dict(state)
    collate_fn = functools.partial(collate, max_tokens=encoding.max_tokens, action_dim=config.model.action_dim,
                                   action_horizon=config.model.action_horizon, state_dim=config.model.state_dim,
                                   cameras=config.data.cameras, image_size=config.model.image_size,
                                   trim_padding=not held_out)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_fn,
                                         pin_memory=pin_memory)
    return dataset, loader


def _build_model(config: TrainConfig, device: torch.device, world: int, *, bf16: bool = False):
    if world > 1 and config.train.fsdp:  # built on meta, each rank materializing its shards only
        return build_sharded(config, device, world, bf16=bf16)
    model = initialized_model(config)
    model.to(device)
    return model, parallelize(model, config, world, bf16=bf16)


def _optimizer(model: KIModel, config: TrainConfig) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if p.dim() >= 2], "weight_decay": config.optim.weight_decay},
              {"params": [p for n, p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.optim.lr, betas=tuple(config.optim.betas), eps=config.optim.eps)


def train(config: TrainConfig, run: str | Path, *, resume: bool = False, allow_config_change: bool = False,
          closed_loop: ClosedLoop | None = None) -> dict:
    """Trains ``config.train.steps`` optimizer steps; returns the final report (rank 0's view).
    ``closed_loop``: the hook that evaluates the live weights closed-loop at the steps ``[eval]
    metaworld`` names (``kidata.training.closed_loop``; a config that names some needs one)."""
    check_hook(config, closed_loop)
    with deterministic_algorithms(config.train.deterministic):
        env = Distributed()
        try:
            return _train(config, RunDir(run), env, resume, allow_config_change, closed_loop)
        finally:
            env.close()


def _train(config: TrainConfig, run: RunDir, env: Distributed, resume: bool, allow_config_change: bool,
           closed_loop: ClosedLoop | None) -> dict:
    manifest_path = config.data.manifest
    if not manifest_path:
        raise ValueError("no mixture: pass --data OUT/manifest.json (or set [data] manifest)")
    build = BuildDir(manifest_path)
    try:
        manifest = build.read_manifest()
    except FileNotFoundError as error:
        if not resume:
            raise
        raise FileNotFoundError(f"{error}; --resume reads the mixture where {run.config_file} records it (data.manifest, "
                                "relative to the folder the run was started from): pass --data with where that build "
                                "is now") from None
    check_compatible(manifest, config)
    check_hook(config, closed_loop, manifest)  # what the first closed-loop evaluation would fail on
    check_init_tokenizer(manifest, config)  # a pretrained embedding means PaliGemma's token ids
    if config.eval.metaworld and sharded_run(config, env):  # refused here, not at the first evaluation
        raise ValueError("[eval] metaworld runs on rank 0 with whole weights: not under FSDP on several processes (drop "
                         "[eval] metaworld with --eval.metaworld '{}', and evaluate the run's checkpoints with kidata "
                         "eval metaworld)")
    use_bf16 = config.train.precision == "bf16" or (config.train.precision == "auto" and env.device.type == "cuda")
    if config.train.frozen_weights == "bf16" and not use_bf16:
        raise ValueError(f"train.frozen_weights = 'bf16' needs bf16 autocast, and this run computes in fp32 "
                         f"(train.precision = {config.train.precision!r} on {env.device.type}): set "
                         "train.precision = 'bf16' or train.frozen_weights = 'fp32'")
    # refused before the run is touched: augmentation strengths, then streams the processes do not divide
    augment = Augment.from_setting(config.data.augment_setting)
    layout = StreamLayout.of(config.data.streams, env.rank, env.world)
    config, schedule_notice = keep_schedule(run, config, resume=resume)
    checkpoint_path = resume_point(run, config, resume=resume, allow_config_change=allow_config_change)
    if schedule_notice and env.rank == 0:
        print(schedule_notice, file=sys.stderr)
    if env.rank == 0:
        _prepare_run(run, config, manifest, build, resume)
        if checkpoint_path is not None:
            truncate_metrics(run.metrics_file, int(checkpoint_path.name.split("_")[1]))
        else:
            drop_unfinished_attempt(run)
    if env.world > 1:
        dist.barrier()

    model, wrapped = _build_model(config, env.device, env.world, bf16=use_bf16)
    optimizer = _optimizer(model, config)
    # the weight EMA is placed as the weights are: under FSDP2 each rank averages its own shard
    ema = ({n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}
           if config.optim.ema_decay > 0 else None)
    start, data_states, last_good, wall_before = 0, None, None, 0.0
    if checkpoint_path is not None:
        # through DCP, from shards or whole files: each rank reads only the pieces it holds
        trainer_state = json.loads((checkpoint_path / "trainer.json").read_text())
        restore_shards(model, optimizer, ema, checkpoint_path, trainer_state.pop("optimizer"))
        start, last_good = trainer_state["step"], checkpoint_path
        wall_before = trainer_state.get("wall_s")  # absent from checkpoints written before it was counted
        data_states = trainer_state["data_state"]
        layout.resumable_from(len(data_states), config.data.streams, env.world, str(checkpoint_path))

    def open_stream(stream: int, state: dict | None):
        return _loader(config, manifest_path, "train", stream, layout.streams, manifest,
                       batch_size=config.data.batch_size, workers=config.data.num_workers,
                       augment=augment, state=state, pin_memory=env.device.type == "cuda")

    data = TrainStreams(layout, open_stream, data_states)
    has_val = manifest.has_split("val")
    if not has_val and env.rank == 0:
        holdout = manifest.recipe.mixture.holdout
        print(f"train: {manifest_path} has no held-out split (the recipe's [mixture] holdout is {holdout}, and no record "
              "fell under it): evaluations report no held-out metrics; set a larger holdout (e.g. 0.05) and rebuild to "
              "measure them", file=sys.stderr)
    logger = MetricsLogger(run, config, manifest, enabled=env.rank == 0, start=start, wall_before=wall_before)
    autocast = functools.partial(torch.autocast, env.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    accum = config.optim.grad_accum
    micro_batches = accum * len(layout.owned)  # the losses of the process's batches are averaged
    last_tokens = None  # the last batch's tokens: a checkpoint records each rank's (hashed only then)
    evaluations = _Evaluations(wrapped, model, ema, config, manifest_path, manifest, run, env, autocast, has_val,
                               closed_loop)
    if config.eval.at_start and start == 0:
        logger.evaluation(0, evaluations(0))
    wrapped.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    averaged = list(ema.values()) if ema is not None else []
    named = dict(model.named_parameters())
    sources = [named[name] for name in ema] if ema is not None else []
    metrics = DeviceMetrics(env.device)
    mix = np.zeros(len(manifest.sources), dtype=np.int64)  # samples per source since the last read
    for step in range(start, config.train.steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        metrics.begin_step()
        for index, (stream, micro, batch) in enumerate(data.micro_batches(accum)):
            mix += np.bincount(batch["source_index"].numpy(), minlength=len(mix))  # still on the host
            last_tokens = batch["tokens"]  # as loaded (a checkpoint hashes each rank's last batch)
            batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            noise, t = flow_inputs(config.train.seed, stream, step, micro, tuple(batch["actions"].shape))
            with gradient_sync(wrapped, last=index == micro_batches - 1):
                with autocast():
                    out = wrapped(batch, noise=noise.to(env.device, non_blocking=True),
                                  t=t.to(env.device, non_blocking=True))
                (out["loss"] / micro_batches).backward()
            metrics.add_micro_batch(out, micro_batches, batch["token_mask"])
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.optim.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:  # one fused update; shard by shard under FSDP2 (no communication)
            with torch.no_grad():
                torch._foreach_lerp_(averaged, [p.detach() for p in sources], 1 - config.optim.ema_decay)
        done = step + 1
        metrics.end_step(done, grad_norm)
        logger.tick(seconds=time.perf_counter() - began, samples=config.data.batch_size * accum * layout.streams)
        if read_at(config, done):
            values, tokens = metrics.read(env, last_good)
            logger.step(done, {**values, "lr": optimizer.param_groups[0]["lr"]}, mix=mix, tokens=tokens)
            mix = np.zeros_like(mix)
        if config.eval.every and done % config.eval.every == 0 and done < config.train.steps:
            logger.evaluation(done, evaluations(done))
            wrapped.train()
        if done % config.checkpoint.every == 0 or done == config.train.steps:
            last_good = _checkpoint(run, done, model, optimizer, ema, data, config, env, last_tokens, logger.wall_s())
    return logger.finish(config.train.steps, evaluations(config.train.steps))


@dataclass(frozen=True)
class _Evaluations:
    """What every evaluation of a run reads, fixed once the model is built: held-out metrics
    (when the mixture has a val split) and, at the steps ``[eval] metaworld`` names, the caller's
    closed-loop hook's."""

    wrapped: torch.nn.Module
    model: KIModel
    ema: dict | None
    config: TrainConfig
    manifest_path: str
    manifest: Manifest
    run: RunDir
    env: Distributed
    autocast: Callable
    has_val: bool
    closed_loop: ClosedLoop | None

    def __call__(self, step: int) -> dict:
        result = self.held_out_metrics() if self.has_val else {}
        if self.config.eval.closed_loop_at(step, self.config.train.steps):
            if self.env.rank == 0:
                result.update(self.closed_loop_metrics(step))
            if self.env.world > 1:
                dist.barrier()
        return result

    def closed_loop_metrics(self, step: int) -> dict:
        """The hook's metrics on the current weights (the EMA's, when kept, as ``kidata.policy.load``
        would pick)."""
        with ema_weights(self.model, self.ema) as model:
            return self.closed_loop(LiveWeights(model, self.config, self.manifest, self.run, self.env.device, step))

    def held_out_metrics(self) -> dict:
        """Metrics on the first ``eval.batches`` held-out batches of this rank, averaged over ranks."""
        config, env, model = self.config, self.env, self.model
        encoder = self.run.encoder(self.manifest)
        evaluator = HeldOutMetrics(self.manifest, encoder, num_steps=config.eval.num_steps,
                                   max_new_tokens=config.eval.max_new_tokens)
        _, loader = _loader(config, self.manifest_path, "val", env.rank, env.world, self.manifest,
                            batch_size=config.eval.batch_size, workers=0, augment=None)
        model.eval()
        if hasattr(model, "unshard"):  # FSDP2: sample_actions / generate run outside forward's hooks
            model.unshard()
        with torch.no_grad(), self.autocast():
            for index, batch in zip(range(config.eval.batches), loader):
                batch = {k: v.to(env.device) for k, v in batch.items()}
                noise, _ = flow_inputs(0, env.rank, -1, index, tuple(batch["actions"].shape))  # alike in every run
                evaluator.update(model, batch, noise=noise.to(env.device))
        if hasattr(model, "reshard"):
            model.reshard()
        results = env.gather(evaluator.result())
        merged = {}
        for key in results[0]:
            values = [r[key] for r in results if key in r]
            merged[key] = (np.mean(values, axis=0).round(6).tolist() if isinstance(values[0], list)
                           else round(float(np.mean(values)), 6))
        return merged


def sharded_run(config: TrainConfig, env: Distributed) -> bool:
    """FSDP2 on more than one process: checkpoints are written shard by shard."""
    return env.world > 1 and config.train.fsdp


def _checkpoint(run: RunDir, step: int, model, optimizer, ema, data: TrainStreams, config: TrainConfig,
                env: Distributed, last_tokens: torch.Tensor | None, wall_s: float | None) -> Path | None:
    # one state per stream, in stream order (rank r owns a consecutive run of them)
    streams = [state for part in env.gather(data.states(config.data.batch_size, config.data.num_workers))
               for state in part]
    # what each rank holds: under DDP every replica's parameters are the same bytes and every rank's
    # batch differs; under FSDP each rank holds its own shard (a drifting replica shows here)
    replicas = env.gather({"rank": env.rank, "parameters_sha256": local_parameters_sha256(model),
                           "last_batch_sha256": hashlib.sha256(last_tokens.cpu().numpy().tobytes()).hexdigest()
                           if last_tokens is not None else ""})
    trainer = {"step": step, "data_state": streams, "world_size": env.world, "replicas": replicas,
               "config_sha256": json_sha256(config.to_json()), "wall_s": wall_s}
    try:
        if sharded_run(config, env):
            temporary = begin_checkpoint(run.path, step) if env.rank == 0 else None
            temporary = env.gather(str(temporary))[0]
            model_state, optimizer_state = sharded_state_dicts(model, optimizer)
            rest = write_shards(Path(temporary), model=model_state, optimizer=optimizer_state, ema=ema)
            dist.barrier()
            # each rank hashes the shards it wrote; rank 0 hashes only what it writes next
            hashed = {name: entry for share in env.gather(hash_share(Path(temporary), env.rank, env.world))
                      for name, entry in share.items()}
            if env.rank != 0:
                return None
            return finish_checkpoint(run.path, step, Path(temporary), trainer=trainer, optimizer_rest=rest,
                                     keep=config.checkpoint.keep, hashed=hashed)
        model_state, optimizer_state = full_state_dicts(model, optimizer)
        if env.rank != 0:
            return None
        return save_checkpoint(run.path, step, model=model_state, optimizer=optimizer_state, ema=ema, trainer=trainer,
                               keep=config.checkpoint.keep)
    except OSError as error:
        previous = run.newest_complete()[0]
        raise OSError(error.errno, f"checkpoint at step {step} failed ({error.strerror or error}); the previous "
                                   f"checkpoint is intact: {previous}") from error
