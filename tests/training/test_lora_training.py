"""A LoRA fine-tune through ``kidata train`` on the real Bridge + VQAv2 fixtures: a ``vlm`` run's
backbone adapted, the fresh expert trained whole, checkpoints holding the trained set alone in the
optimizer and EMA, resume, 2-process FSDP2, the merged policy and the merged export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.training import config, losses, run_two_processes  # noqa: E402

from kidata.config import apply_overrides  # noqa: E402
from kidata.training.checkpoint import read_full  # noqa: E402
from kidata.training.trainer import train  # noqa: E402

LORA = {"lora": {"backbone_rank": 4, "expert_rank": 8}}


def step(run: Path, number: int) -> Path:
    return run / "checkpoints" / f"step_{number:07d}"


@pytest.fixture(scope="module")
def lora_run(mixture, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora")
    vlm = root / "vlm"
    train(config(mixture, model={"variant": "vlm"}, data={"weights": {"vqav2": 1.0}}, train={"steps": 2},
                 eval={"every": 0}), vlm)
    run = root / "lora"
    train(config(mixture, model=LORA, train={"init_format": "kidata", "init_from": vlm, "steps": 4},
                 checkpoint={"every": 2, "keep": 2}, eval={"every": 0}, optim={"ema_decay": 0.9}),
          run)
    return vlm, run


def trained_names(run: Path, number: int = 4) -> set[str]:
    optimizer = read_full(step(run, number), "optimizer")
    return {name.rsplit(".", 1)[0] for name in optimizer}


def test_a_lora_run_from_a_vlm_backbone_trains_backbone_adapters_and_the_fresh_expert(lora_run):
    _, run = lora_run
    model = read_full(step(run, 4), "model")
    backbone_adapters = {name for name in model if name.startswith("layers.") and "lora" in name}
    expert = {name for name in model if name.startswith(("expert_", "action_", "time_mlp_"))}
    assert len(backbone_adapters) == 2 * 7 * 2
    assert trained_names(run) == backbone_adapters | expert  # the expert no checkpoint filled trains whole
    assert set(read_full(step(run, 4), "ema")) == trained_names(run)
    optimizer = read_full(step(run, 4), "optimizer")
    assert set(optimizer) == {f"{name}.{kind}" for name in trained_names(run) for kind in ("exp_avg", "exp_avg_sq")}


def test_the_backbones_base_weights_stay_the_vlm_runs_through_training(lora_run):
    vlm, run = lora_run
    source = read_full(step(vlm, 2), "model")
    for number in (2, 4):
        weights = read_full(step(run, number), "model")
        backbone = [name for name in weights if name.startswith(("vision.", "projector.", "embed.", "layers.",
                                                                   "final_norm.")) and "lora" not in name]
        assert backbone and all(torch.equal(weights[name], source[name]) for name in backbone)
    before, after = read_full(step(run, 2), "model"), read_full(step(run, 4), "model")
    assert not torch.equal(before["layers.0.q.lora_b"], after["layers.0.q.lora_b"])


def test_a_resumed_lora_run_repeats_the_uninterrupted_losses(lora_run, mixture, tmp_path):
    vlm, run = lora_run
    copy = tmp_path / "resumed"
    shutil.copytree(run, copy)
    shutil.rmtree(step(copy, 4))
    (copy / "checkpoints" / "latest").write_text("step_0000002\n")
    train(config(mixture, model=LORA, train={"init_format": "kidata", "init_from": vlm, "steps": 4},
                 checkpoint={"every": 2, "keep": 2}, eval={"every": 0}, optim={"ema_decay": 0.9}),
          copy, resume=True)
    assert losses(copy) == losses(run)
    assert all(torch.equal(a, b) for a, b in zip(read_full(step(copy, 4), "model").values(),
                                                 read_full(step(run, 4), "model").values()))


ACCUMULATED = {"data": {"streams": 2, "batch_size": 4}, "optim": {"grad_accum": 2, "ema_decay": 0.9},
               "train": {"steps": 4, "fsdp": True}, "checkpoint": {"every": 2}, "eval": {"every": 0}}


@pytest.fixture(scope="module")
def sharded_lora_runs(lora_run, mixture, tmp_path_factory) -> dict:
    """The same 4 LoRA steps over 2 data streams with 2 micro-batches each per step, on 1 process
    and on 2 gloo processes under FSDP2 (each a stream), from the ``vlm`` run's backbone."""
    vlm, _ = lora_run
    root = tmp_path_factory.mktemp("lora_fsdp")
    overrides = apply_overrides(ACCUMULATED, {"model": LORA, "train": {"init_format": "kidata", "init_from": str(vlm)}})
    train(config(mixture, **overrides), root / "one")
    run_two_processes(root / "two", mixture, overrides)
    return {"vlm": vlm, 1: root / "one", 2: root / "two", "config": config(mixture, **overrides)}


@pytest.mark.slow
def test_a_two_process_fsdp_lora_run_accumulating_micro_batches_trains_as_one_process_does(sharded_lora_runs):
    one, two = sharded_lora_runs[1], sharded_lora_runs[2]
    trainer = json.loads((step(two, 4) / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and (step(two, 4) / "model").is_dir()  # written as each rank's shards
    assert sorted(losses(two)) == [1, 2, 3, 4]
    for number in (1, 2, 3, 4):
        assert losses(two)[number] == pytest.approx(losses(one)[number], rel=1e-5, abs=1e-6), number
    for part in ("model", "ema"):
        sharded, whole = read_full(step(two, 4), part), read_full(step(one, 4), part)
        assert set(sharded) == set(whole)
        for name in whole:
            torch.testing.assert_close(sharded[name], whole[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_under_fsdp_only_the_trained_tensors_change_and_the_frozen_base_stays_the_initial_one(sharded_lora_runs):
    from kidata.training.initialize import initialized_model

    initial = initialized_model(sharded_lora_runs["config"]).state_dict()
    trained = {name.rsplit(".", 1)[0] for name in read_full(step(sharded_lora_runs[2], 4), "optimizer")}
    assert trained == trained_names(sharded_lora_runs[1])  # the one-process run's trained set
    final = read_full(step(sharded_lora_runs[2], 4), "model")
    changed = {name for name, tensor in final.items() if not torch.equal(tensor, initial[name])}
    assert changed == trained
    assert {name for name in trained if name.startswith("layers.")} == {
        name for name in final if name.startswith("layers.") and "lora" in name}  # the backbone through its adapters


def test_a_run_storing_frozen_weights_in_bf16_trains_bit_for_bit_as_one_storing_them_in_fp32(lora_run, mixture,
                                                                                                tmp_path):
    vlm, _ = lora_run
    runs = {}
    for frozen in ("fp32", "bf16"):
        runs[frozen] = tmp_path / frozen
        train(config(mixture, model=LORA, train={"init_format": "kidata", "init_from": vlm, "steps": 2, "precision": "bf16",
                                                 "frozen_weights": frozen},
                     checkpoint={"every": 2}, eval={"every": 0}), runs[frozen])
    assert losses(runs["bf16"]) == losses(runs["fp32"])
    wide, narrow = read_full(step(runs["fp32"], 2), "model"), read_full(step(runs["bf16"], 2), "model")
    trained = trained_names(runs["fp32"], 2)
    cast = {name for name, tensor in narrow.items() if tensor.dtype == torch.bfloat16}
    assert "layers.0.q.weight" in cast and "vision.patch.weight" in cast and not cast & trained
    for name, tensor in wide.items():
        assert torch.equal(narrow[name], tensor.to(narrow[name].dtype)), name


def test_frozen_weights_in_bf16_on_an_fp32_run_are_refused_naming_the_precision(mixture, tmp_path):
    with pytest.raises(ValueError, match=r"train.frozen_weights = 'bf16' needs bf16 autocast, and this run computes "
                                         r"in fp32 \(train.precision = 'auto' on cpu\): set train.precision = 'bf16'"):
        train(config(mixture, model=LORA, train={"init_format": "kidata", "init_from": "runs/vlm", "frozen_weights": "bf16"}),
              tmp_path / "run")
    assert not (tmp_path / "run").exists()


def observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {"base_0": rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), "base_1": None},
            "state": rng.normal(size=7), "prompt": "put the spoon in the pot"}


def test_the_merged_policy_acts_as_the_unmerged_one(lora_run):
    from kidata.policy import load

    _, run = lora_run
    merged, unmerged = load(run), load(run, merge_lora=False)
    assert not any("lora" in name for name in merged.model.state_dict())
    assert any("lora" in name for name in unmerged.model.state_dict())
    noise = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(merged.sample_actions(observation(), noise=noise),
                               unmerged.sample_actions(observation(), noise=noise), rtol=0, atol=1e-5)


def test_export_merge_lora_writes_weights_an_unadapted_model_loads(lora_run, tmp_path, capsys):
    from safetensors import safe_open

    from kidata.cli import main
    from kidata.model.config import ModelConfig
    from kidata.model.ki_model import KIModel
    from kidata.model.weights import load_weights
    from kidata.policy import load

    _, run = lora_run
    out = tmp_path / "merged.safetensors"
    assert main(["export", "weights", str(run), "--out", str(out), "--merge-lora"]) == 0
    assert "LoRA adapters merged" in capsys.readouterr().out
    with safe_open(str(out), "pt") as handle:
        config = ModelConfig(**json.loads(handle.metadata()["kidata_model_config"]))
    assert config.lora is None
    model = load_weights(KIModel(config), out)
    policy = load(run)
    for name, tensor in policy.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
