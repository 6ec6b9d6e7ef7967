"""Checkpoints at scale, on 2 gloo processes (tests/support/sharded_checkpoint_worker.py): under FSDP2 only
rank 0 builds the whole model (the others build on ``meta`` and materialize their shards), each
rank hashes the shards it wrote, and resuming reads each rank's pieces through
``torch.distributed.checkpoint`` from shard folders and whole files alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    from support.training import free_port

    out = tmp_path_factory.mktemp("sharded")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(ROOT / "tests" / "support" / "sharded_checkpoint_worker.py"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_under_fsdp_only_rank_0_builds_the_whole_model_and_every_rank_holds_half_of_it(ranks):
    from support.sharded_checkpoint_worker import config

    from kidata.training.initialize import initialized_model

    out, records = ranks  # rank 1 ran with initialized_model refusing to run
    assert [r["local_numel"] * 2 for r in records] == [r["numel"] for r in records]
    built, expected = load_file(str(out / "built.safetensors")), initialized_model(config()).state_dict()
    assert set(built) == set(expected)
    assert all(torch.equal(built[name], expected[name]) for name in expected)  # one process's initialization


def test_each_rank_hashes_the_shards_it_wrote_and_rank_0_hashes_only_trainer_json(ranks):
    from kidata.training.checkpoint import checkpoint_problem

    out, records = ranks
    step = out / "run" / "checkpoints" / "step_0000001"
    for rank, record in enumerate(records):
        assert [name.split("/")[0] for name in record["hashed"]] == ["ema", "model", "optimizer"]
        assert all(f"shard-{rank + 1:05d}-" in name for name in record["hashed"])
    assert records[0]["hashed_by_finish"] == ["trainer.json"]
    listed = set(json.loads((step / "checksums.json").read_text()))
    assert listed == set(records[0]["hashed"]) | set(records[1]["hashed"]) | {"trainer.json"}
    assert checkpoint_problem(step) is None  # the merged checksums are the files' own


@pytest.mark.parametrize("layout", ["sharded", "whole"])
def test_resume_reads_each_ranks_pieces_through_dcp_without_loading_a_whole_file(ranks, layout):
    out, records = ranks  # safetensors.torch.load_file refused on both ranks while restoring
    trained = load_file(str(out / "trained.safetensors"))
    assert records[0][f"before_{layout}"] == 0  # the model restored into held other values
    assert records[0][f"differs_{layout}"] == []
    assert records[0][f"restored_{layout}"] == len(trained)
    assert {name.split("/")[0] for name in trained} == {"model", "optimizer", "ema"}
