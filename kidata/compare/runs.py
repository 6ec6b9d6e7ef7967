"""``kidata compare``'s runs: what to compare (``CompareConfig``), the mixture built once, and every
(variant, co-training, seed) run trained from the same initialization with the same budget,
evaluation schedule and, per seed, the same data order; resumable by construction (a run with a
``report.json`` is finished and not retrained, a run with checkpoints resumes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidata.config import Overrides
from kidata.envs.metaworld import MAX_EPISODE_STEPS
from kidata.manifest import BuildDir
from kidata.model.config import VARIANTS

RUN_VARIANTS = tuple(v for v in VARIANTS if v != "vlm")  # vlm trains the backbone --init comes from


@dataclass(frozen=True)
class CompareConfig:
    """What to compare. ``target_mse``: the action error whose first crossing is the "steps to
    reach" statistic (the paper's Fig. 6b); default: the mean final error of the runs, so that the
    statistic separates fast from slow learners. ``metaworld_episodes`` > 0 adds closed-loop
    success (a recipe with a ``metaworld`` source) at ``metaworld_evaluations`` of the evaluations,
    evenly spaced and the last included (default: every one): closed-loop episodes cost ten times
    a held-out batch, so the action-error curve can be finer than the success curve."""

    recipe: str
    model: str
    out: Path
    variants: tuple[str, ...] = ("ki", "pi0", "joint", "pi0_fast", "frozen")
    cotrain: tuple[bool, ...] = (True, False)
    seeds: int = 3
    steps: int = 2000
    evaluations: int = 4
    init: str = ""
    target_mse: float | None = None
    metaworld_episodes: int = 0
    metaworld_max_steps: int = MAX_EPISODE_STEPS
    metaworld_evaluations: int = 0
    workers: int = 2
    jobs: int = 1
    overrides: Overrides = field(default_factory=dict)  # every run's, on top of the comparison's own

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in RUN_VARIANTS]
        if unknown:
            raise ValueError(f"--variants {unknown} are not among {list(RUN_VARIANTS)}")
        if self.metaworld_evaluations < 0 or (self.metaworld_evaluations
                                              and self.evaluations % self.metaworld_evaluations):
            raise ValueError(f"--metaworld-evaluations {self.metaworld_evaluations} must divide --evaluations "
                             f"{self.evaluations} (evenly spaced; 0: at every evaluation)")
        if self.jobs < 1:
            raise ValueError(f"--jobs {self.jobs} must be >= 1 (runs trained at once)")
        if not self.variants or not self.cotrain or self.seeds < 1 or self.steps < 1 or self.evaluations < 1:
            raise ValueError("compare needs at least one variant, one co-training arm, one seed, one step and "
                             "one evaluation")

    def run_names(self) -> list[tuple[str, str, bool, int]]:
        """(name, variant, co-training, seed) in training order: seed-major, so that a partial
        comparison already holds one of every arm."""
        return [(f"{variant}-{'cotrain' if on else 'robot'}-s{seed}", variant, on, seed)
                for seed in range(self.seeds) for on in self.cotrain for variant in self.variants]

    def run_dir(self, name: str):
        """The ``kidata.training.run_dir.RunDir`` of run ``name``: ``out/runs/NAME``."""
        from kidata.training.run_dir import RunDir

        return RunDir(self.out / "runs" / name)


def build_once(config: CompareConfig) -> Path:
    """The mixture's manifest, built into ``out/data`` unless a build of the same recipe is there."""
    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe

    manifest = Path(BuildDir.at(str(config.out / "data")).manifest_path)
    recipe = load_recipe(config.recipe)
    if manifest.is_file():
        built = BuildDir(str(manifest)).read_manifest().recipe_sha256
        if built != recipe.sha256:
            raise ValueError(f"{manifest} was built from another recipe than {config.recipe} (recipe sha256 "
                             f"{built[:12]} vs {recipe.sha256[:12]}): use another --out")
        return manifest
    print(f"building {config.recipe} into {manifest.parent} ...", flush=True)
    build(recipe, str(manifest.parent), workers=config.workers, progress=True)
    return manifest


def _overrides(config: CompareConfig, manifest_path: Path, manifest, variant: str, cotrain: bool,
               seed: int) -> dict[str, dict[str, Any]]:
    """One run's overrides of the model preset: the comparison's budget, schedule and arm, then
    ``config.overrides`` on top (a key given there wins)."""
    vlm = [s.name for s in manifest.sources if s.kind == "vlm"]
    every = max(1, config.steps // config.evaluations)
    out: dict[str, dict[str, Any]] = {
        "data": {"manifest": str(manifest_path)}, "model": {"variant": variant},
        "train": {"seed": seed, "steps": config.steps}, "eval": {"every": every, "at_start": True},
        "checkpoint": {"every": every, "keep": 1}}
    if cotrain and not vlm:
        raise ValueError(f"--cotrain on needs VLM sources; {manifest_path} has only "
                         f"{[s.name for s in manifest.sources]} (use --cotrain off)")
    if not cotrain and vlm:
        out["data"]["weights"] = {s.name: s.weight for s in manifest.sources if s.kind == "robot"}
    if config.init:
        out["train"].update(init_from=str(config.init), init_format="kidata")
    if config.metaworld_episodes:
        tasks = [t for s in manifest.recipe.sources_read_by("metaworld") for t in _as_list(s.options.get("tasks"))]
        if not tasks:
            raise ValueError(f"--metaworld-episodes needs a metaworld source in {config.recipe}")
        closed_loop = config.metaworld_evaluations or config.evaluations
        out["eval"]["metaworld"] = {"tasks": tasks, "episodes": config.metaworld_episodes,
                                    "max_steps": config.metaworld_max_steps,
                                    "every": every * (config.evaluations // closed_loop)}
    for section, table in config.overrides.items():
        out.setdefault(section, {}).update(table)
    return out


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def train_all(config: CompareConfig, manifest_path: Path) -> None:
    """Trains every run not yet finished (``report.json``), resuming those with checkpoints;
    ``config.jobs`` at once, each in its own process on its share of the cores (and on its own
    CUDA device where there are several: ``job_devices``). Why: in the training logs of the
    full comparison's backbone runs (docs/results/comparison.md; observed, not a benchmark), two
    single-threaded trainings of the tiny preset on this 2-core VM made 7.4 steps/s together where
    one two-threaded training made 6.2. Every run's overrides are derived here, before any trains,
    so a careless comparison is refused before the first run."""
    from kidata.manifest import Manifest

    manifest, _ = Manifest.read(str(manifest_path))
    names = config.run_names()
    todo = []
    for index, (name, variant, cotrain, seed) in enumerate(names):
        if config.run_dir(name).is_finished():
            print(f"[{index + 1}/{len(names)}] {name}: finished, not retrained", flush=True)
        else:
            todo.append((f"[{index + 1}/{len(names)}] {name}", name,
                         _overrides(config, manifest_path, manifest, variant, cotrain, seed)))
    if config.jobs == 1:
        for job in todo:
            _train_one(config, *job)
        return
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    import torch

    threads = max(1, len(os.sched_getaffinity(0)) // config.jobs)
    context = multiprocessing.get_context("spawn")  # fresh processes: no forked torch or simulator state
    devices = context.Queue()
    for device in job_devices(config.jobs, torch.cuda.device_count()):
        devices.put(device)
    with ProcessPoolExecutor(config.jobs, mp_context=context, initializer=_start_worker,
                             initargs=(threads, devices)) as pool:
        futures = [pool.submit(_train_one, config, *job, threads=threads) for job in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in done if future.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()


def job_devices(jobs: int, cuda_devices: int) -> list[str | None]:
    """The CUDA device (its ``CUDA_VISIBLE_DEVICES``) each of ``jobs`` training processes gets:
    one per device, round-robin when there are more jobs than devices; None without CUDA."""
    return [str(job % cuda_devices) if cuda_devices else None for job in range(jobs)]


def _start_worker(threads: int, devices) -> None:
    """A training process's setup, before its first CUDA call: its device and its thread share."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    import torch

    torch.set_num_threads(threads)


def _train_one(config: CompareConfig, label: str, name: str, overrides: Overrides, threads: int | None = None) -> None:
    from kidata.eval.during_training import closed_loop_hook
    from kidata.training.config import TrainConfig
    from kidata.training.trainer import train

    run = config.run_dir(name)
    resume = run.holds_checkpoints()
    where = f" ({config.jobs} at once, {threads} torch thread{'s' if threads != 1 else ''} each)" if threads else ""
    print(f"{label}: {'resuming' if resume else 'training'} {config.steps} steps{where}", flush=True)
    train_config = TrainConfig.load(config.model, overrides)
    train(train_config, run.path, resume=resume, closed_loop=closed_loop_hook(train_config))

