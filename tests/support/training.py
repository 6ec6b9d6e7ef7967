"""Tiny training runs on the Bridge + VQAv2 fixtures: the preset, its test shape, the mixture they train on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from kidata import assets
from kidata.config import apply_overrides, to_arguments
from kidata.training.config import TrainConfig, load

TINY = assets.ROOT / "model" / "ki_tiny.toml"
SHAPE = {"model": {"image_size": 64, "action_horizon": 4},
         "data": {"cameras": ["base_0", "base_1"], "num_workers": 0, "batch_size": 8},
         "log": {"progress": False, "every": 1}, "eval": {"batches": 1, "batch_size": 4, "max_new_tokens": 24},
         "schedule": {"warmup_steps": 5}}


def build_mixture(root: Path) -> str:
    """The test mixture of Bridge + VQAv2 (VQAv2 at weight 0.3, a third of its examples held out for evaluation)
    built under ``root``; returns the manifest's path."""
    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe
    from support.recipes import bridge, vqav2, write_recipe

    path = write_recipe(root / "recipe.toml", bridge(), vqav2(weight=0.3, holdout=0.34), units=2)
    build(load_recipe(path), str(root / "out"), progress=False)
    return str(root / "out" / "manifest.json")


def config(mixture: str, **tables: dict) -> TrainConfig:
    """The tiny preset in SHAPE, training on the build whose manifest is ``mixture``, then ``tables`` on
    top: ``config(mixture, train={"steps": 50})``."""
    return load(TINY, apply_overrides(apply_overrides(SHAPE, {"data": {"manifest": mixture}}), tables))


def arguments(**tables: dict) -> list[str]:
    """SHAPE with ``tables`` on top as ``kidata train``'s command-line overrides (a run under torchrun)."""
    return to_arguments(apply_overrides(SHAPE, tables))


def losses(run: Path) -> dict[int, float]:
    """Each logged step's loss in ``run``/metrics.jsonl (a resumed run's rewritten steps replace the earlier ones)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]  # a resumed run rewrites steps after its checkpoint
    return out


def free_port() -> int:
    """A TCP port free at the moment, for a torch.distributed rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_processes(run: Path, mixture: str, tables: dict, *flags: str) -> None:
    """``kidata train`` of the tiny preset in SHAPE on 2 gloo processes (torchrun, CPU) into ``run``, with ``tables``
    on top (as command-line overrides) and ``flags`` (``--resume``); asserts that it exits 0."""
    from support.data import REPO

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "kidata.cli", "train", "--model", str(TINY), "--data", mixture, "--out", str(run), *flags,
               *arguments(**tables)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
