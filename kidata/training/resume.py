"""Whether and from where a run continues: decided before anything in the run directory is written."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

from kidata.config import apply_overrides
from kidata.training.checkpoint import CheckpointError
from kidata.training.config import TrainConfig
from kidata.training.run_dir import RunDir, metrics_lines


class ResumeRefused(ValueError):
    """A ``--resume`` that would not continue the run it names: nothing in the run was changed."""


# Settings a resumed run may change with ``allow_config_change``: they decide how long to train
# and what to write, never what the weights, optimizer state or data streams mean.
RESUMABLE_CHANGES = ("train.steps", "eval.", "log.", "checkpoint.", "data.num_workers")


def config_changes(before: dict, after: dict, prefix: str = "") -> list[str]:
    """``section.key: old -> new`` for every value that differs between two resolved configs."""
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return out


def _pinned_schedule(config: dict) -> dict:
    """The resolved config with ``schedule.decay_steps = 0`` ("the run's steps") written as the number
    it means, so that a resume that changes ``train.steps`` is seen to change the schedule too."""
    schedule = dict(config.get("schedule", {}))
    if not schedule.get("decay_steps"):
        schedule["decay_steps"] = config.get("train", {}).get("steps")
    return {**config, "schedule": schedule}


def resumed_config(run: RunDir, overrides: Sequence[str] = ()) -> TrainConfig:
    """The run's saved config (``RUN/config.json``) with ``--section.key value`` overrides on top: a
    resume needs none of the original command line retyped."""
    saved = run.config_file
    if not saved.exists():
        raise ResumeRefused(f"--resume: {saved} does not exist; name the run's --out folder (a run of kidata train)")
    merged = apply_overrides(run.config_mapping(), overrides)
    return TrainConfig.from_mapping(merged, origin=f"{saved} with the command line's overrides")


def keep_schedule(run: RunDir, config: TrainConfig, *, resume: bool) -> tuple[TrainConfig, str | None]:
    """On a resume that changes ``train.steps`` of a run whose schedule decays over "the run's steps"
    (``schedule.decay_steps = 0``): the config with the decay pinned to the steps the run was started
    with, and the sentence that says so. Stretching the decay instead would send the learning rate
    back up mid-run (a 300-step run resumed to 600 went from 2.4e-4 back to 7.3e-4)."""
    if not resume or not run.config_file.exists() or config.schedule.decay_steps:
        return config, None
    before = run.config()
    old_steps = before.train.steps
    decay = before.schedule.decay_steps or old_steps  # the decay the run was trained with
    if old_steps in (None, config.train.steps):
        return config, None
    pinned = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule, decay_steps=decay))
    return pinned, (f"resume: train.steps {old_steps} -> {config.train.steps}; the learning-rate schedule keeps its decay "
                    f"over the run's {decay} steps (schedule.decay_steps = {decay}), then holds its final rate")


def check_same_mixture(before, after, saved: Path) -> None:
    """A resume continues on the mixture the run was trained on: the same recipe (its sha256) and
    the same shards (path and sha256 of each). ``--allow-config-change`` never covers the data: a
    rebuilt or replaced mixture at the same path would silently change what the weights learn
    from and what the data streams' saved positions point at. ``before`` and ``after`` are
    ``kidata.manifest.Manifest``s: the run's copy and the one given now."""
    problems = []
    if before.recipe_sha256 != after.recipe_sha256:
        problems.append(f"recipe sha256 {before.recipe_sha256[:12]} -> {after.recipe_sha256[:12]}")
    old = {s.path: s.sha256 for source in before.sources for s in source.shards}
    new = {s.path: s.sha256 for source in after.sources for s in source.shards}
    changed = sorted(p for p in old.keys() & new.keys() if old[p] != new[p])
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    if changed or added or removed:
        example = (changed + added + removed)[0]
        problems.append(f"shards: {len(changed)} changed, {len(added)} added, {len(removed)} removed (e.g. {example})")
    if problems:
        raise ResumeRefused(f"--resume: the mixture differs from the one {saved} records: " + "; ".join(problems)
                            + " (--allow-config-change never covers the data): resume on the original build, or "
                              "start a new run with another --out")


def resume_point(run: RunDir, config: TrainConfig, *, resume: bool, allow_config_change: bool = False) -> Path | None:
    """The checkpoint to continue from (None for a fresh run), decided before anything in ``run``
    is written: a fresh run into a directory with checkpoints, a resume with nothing to resume, a
    resume whose config differs (model fields never; others only the ``RESUMABLE_CHANGES`` with
    ``allow_config_change``), and a run whose checkpoints are all damaged are refused."""
    if not resume:
        if run.holds_checkpoints():
            raise FileExistsError(f"{run.path} already holds checkpoints: pass --resume to continue it, or another --out")
        return None
    if not run.holds_checkpoints():
        raise ResumeRefused(f"--resume: {run.path} holds no checkpoint to continue; drop --resume to start a new run "
                            "there")
    if not run.manifest_file.is_file():  # else the mixture check would be skipped, and any build accepted
        raise ResumeRefused(f"--resume: {run.manifest_file} is missing: the run's copy of the manifest it trained on, "
                            f"which a resume checks the mixture against; copy the manifest.json of that build there "
                            f"({config.data.manifest}, if it was not rebuilt since), or start a new run with another --out")
    if run.has_metrics():
        metrics_lines(run.metrics_file)  # a damaged record is named now, before the run is written to
    saved = run.config_file
    if saved.exists():
        # both through the dataclasses: a config.json written before a field existed holds its default
        before = run.config().to_json()
        changes = config_changes(_pinned_schedule(json.loads(json.dumps(before))),
                                 _pinned_schedule(json.loads(json.dumps(config.to_json()))))
        # where the build lies is no setting: a relative path recorded from another folder, or a build
        # moved or copied, is the same mixture, compared by content (``check_same_mixture``, always)
        if any(change.startswith("data.manifest:") for change in changes):
            changes = [change for change in changes if not change.startswith("data.manifest:")]
            print(f"resume: the mixture is read from {config.data.manifest} (the run recorded "
                  f"{before['data']['manifest']}); its content is checked against {run.manifest_file}", file=sys.stderr)
        unsafe = [c for c in changes if not c.startswith(RESUMABLE_CHANGES)]  # model.* among them, always
        refused = unsafe if allow_config_change else changes
        if refused:
            hint = (f" (only {', '.join(RESUMABLE_CHANGES)} may change on resume, with --allow-config-change)"
                    if unsafe else " (pass --allow-config-change to accept them)")
            raise ResumeRefused(f"--resume: the config differs from {saved}: " + "; ".join(refused) + hint)
    path, notices = run.newest_complete()
    for notice in notices:
        print(f"resume: skipping a damaged checkpoint: {notice}", file=sys.stderr)
    if path is None:
        raise CheckpointError(f"--resume: {run.path} holds no complete checkpoint: " + "; ".join(notices))
    return path
