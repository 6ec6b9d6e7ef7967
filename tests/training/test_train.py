"""``kidata train`` end to end on the real Bridge + VQAv2 fixtures: build -> train -> checkpoint
-> resume -> eval -> policy, plus refusals, faults and a 2-process gloo run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.data import REPO as ROOT  # noqa: E402
from support.data import shared_path  # noqa: E402
from support.training import TINY, arguments, config, free_port, losses, run_two_processes  # noqa: E402

from kidata.config import apply_overrides, parse_overrides  # noqa: E402
from kidata.manifest import ManifestMismatch  # noqa: E402
from kidata.pipelines.build import build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402
from kidata.training import trainer as train_module  # noqa: E402
from kidata.training.config import TrainConfig, load  # noqa: E402
from kidata.training.trainer import TrainingDiverged, train  # noqa: E402


@pytest.fixture(scope="module")
def straight_run(mixture, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "straight"
    report = train(config(mixture, train={"steps": 50}, checkpoint={"every": 25}, eval={"every": 25}, optim={"ema_decay": 0.9}), run)
    return run, report


def test_training_writes_metrics_checkpoints_curves_and_a_report(straight_run):
    run, report = straight_run
    assert report["steps"] == 50 and report["final"]["step"] == 50
    assert {"loss", "flow_loss", "fast_loss", "grad_norm", "lr", "samples_per_s", "source_mix"} <= set(report["final"])
    assert set(report["final"]["source_mix"]) == {"bridge", "vqav2"}
    tokens_per_sample = report["final"]["tokens_per_s"] / report["final"]["samples_per_s"]  # non-padding only
    assert 10 < tokens_per_sample < json.loads((run / "manifest.json").read_text())["encoding"]["max_tokens"]
    assert (run / "loss_curves.png").stat().st_size > 0 and (run / "config.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000025", "step_0000050"]
    assert list((run / "tensorboard").iterdir())
    recorded = losses(run)
    assert sorted(recorded) == list(range(1, 51))
    assert np.mean([recorded[s] for s in range(41, 51)]) < np.mean([recorded[s] for s in range(1, 11)])


def test_evaluation_reports_action_fast_and_vlm_retention_metrics(straight_run):
    _, report = straight_run
    result = report["eval"]
    assert {"action_mse", "action_mse_dim", "fast_decode_rate", "vlm_token_accuracy", "vlm_exact_match"} <= set(result)
    assert len(result["action_mse_dim"]) == 7 and result["action_mse"] >= 0
    assert 0 <= result["fast_decode_rate"] <= 1 and 0 <= result["vlm_token_accuracy"] <= 1


def test_checkpoints_hold_no_pickle(straight_run):
    run, _ = straight_run
    for path in (run / "checkpoints").rglob("*"):
        if path.is_file() and path.name != "latest":
            assert path.suffix in (".safetensors", ".json"), path
            if path.suffix == ".safetensors":
                header = int.from_bytes(path.read_bytes()[:8], "little")
                json.loads(path.read_bytes()[8 : 8 + header])  # a safetensors JSON header, not a pickle
    assert {p.name for p in (run / "checkpoints" / "step_0000050").iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "ema.safetensors", "trainer.json", "checksums.json"}


def test_exported_weights_are_the_policys_and_rebuild_the_model_alone(straight_run, tmp_path, capsys):
    import shutil

    from safetensors import safe_open

    from kidata import policy
    from kidata.cli import main
    from kidata.model.config import ModelConfig
    from kidata.model.ki_model import KIModel
    from kidata.model.weights import load_weights

    run, _ = straight_run
    assert main(["export", "weights", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["kidata_weights"] == "ema" and metadata["kidata_checkpoint"].endswith("step_0000050")
    model = load_weights(KIModel(ModelConfig(**json.loads(metadata["kidata_model_config"]))), tmp_path / "w.safetensors")
    served = policy.load(run).model.state_dict()
    assert all(torch.equal(served[name], value) for name, value in model.state_dict().items())
    assert main(["export", "weights", str(run), "--out", str(tmp_path / "t.safetensors"), "--no-ema"]) == 0
    assert main(["export", "weights", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) != 0
    assert "not a kidata run (no config.json)" in capsys.readouterr().err
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    weights = damaged / "checkpoints" / "step_0000050" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["export", "weights", str(damaged), "--checkpoint", str(weights.parent),
                 "--out", str(tmp_path / "d.safetensors")]) != 0
    err = capsys.readouterr().err
    assert "cannot be used" in err and "model.safetensors has 1000 bytes" in err
    assert not (tmp_path / "d.safetensors").exists()


def test_a_resumed_run_repeats_the_uninterrupted_losses(mixture, straight_run, tmp_path):
    straight, _ = straight_run
    run = tmp_path / "resumed"
    common = {"checkpoint": {"every": 25}, "eval": {"every": 25}, "optim": {"ema_decay": 0.9}}
    train(config(mixture, train={"steps": 25}, schedule={"decay_steps": 50}, **common), run)
    train(config(mixture, train={"steps": 50}, schedule={"decay_steps": 50}, **common), run, resume=True,
          allow_config_change=True)  # longer training: the one change a resume may make, and only explicitly
    expected, actual = losses(straight), losses(run)
    assert sorted(actual) == list(range(1, 51))
    for step in range(26, 51):
        assert actual[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_a_checkpoint_path_that_is_not_one_is_refused_naming_the_runs_checkpoints(straight_run):
    from kidata import policy

    run, _ = straight_run
    mistyped = run / "checkpoints" / "step_00000050"  # one zero too many
    with pytest.raises(FileNotFoundError, match=r"step_00000050: no checkpoint there .* holds step_0000025, step_0000050; pass one"):
        policy.load(run, checkpoint=mistyped)


def test_the_policy_maps_a_raw_observation_to_an_unnormalized_chunk(straight_run):
    from kidata import policy
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    run, _ = straight_run
    episode = next(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")).episodes())
    loaded = policy.load(run)
    images = {camera: frames.frame(0) for camera, frames in episode.images.items()}
    observation = {"images": {camera: images.get(camera) for camera in ("base_0", "base_1")},
                   "state": episode.state[0], "prompt": episode.instructions[0]}
    noise = torch.zeros(1, 4, 8)
    first = loaded.sample_actions(observation, noise=noise)
    assert first.shape == (4, 7) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, loaded.sample_actions(observation, noise=noise))
    normalized = loaded.model.sample_actions(loaded.batch(observation), num_steps=10, noise=noise)[0, :, :7].numpy()
    q01, q99 = np.asarray(loaded.stats.actions.q01), np.asarray(loaded.stats.actions.q99)
    by_hand = (normalized + 1) / 2 * (q99 - q01 + 1e-6) + q01  # [q01, q99] <- [-1, 1], openpi's epsilon
    np.testing.assert_allclose(first, by_hand, rtol=1e-5, atol=1e-6)  # the robot's units, by the action statistics


def test_a_cold_or_averaged_flow_policy_acts_on_the_chunks_it_says(straight_run):
    """noise_scale 0 is the chunk integrated from zero noise, every call; flow_samples K is the
    mean of K chunks drawn as one batch from K noises."""
    from kidata import policy

    run, _ = straight_run
    episode = next(iter(_bridge_episodes()))
    observation = {"images": {"base_0": episode.images["base_0"].frame(0), "base_1": None},
                   "state": episode.state[0], "prompt": episode.instructions[0]}
    plain, cold = policy.load(run), policy.load(run, noise_scale=0.0)
    np.testing.assert_array_equal(cold.sample_actions(observation), cold.sample_actions(observation))
    np.testing.assert_allclose(cold.sample_actions(observation),
                               plain.sample_actions(observation, noise=torch.zeros(1, 4, 8)), rtol=1e-6, atol=1e-7)
    averaged = policy.load(run, flow_samples=3)
    torch.manual_seed(7)
    actions = averaged.sample_actions(observation)
    torch.manual_seed(7)
    noises = torch.randn(3, 4, 8)
    chunks = [plain.sample_actions(observation, noise=noises[k : k + 1]) for k in range(3)]
    np.testing.assert_allclose(actions, np.mean(chunks, axis=0), rtol=1e-4, atol=1e-5)  # unnormalizing is affine
    with pytest.raises(ValueError, match="flow_samples >= 1"):
        policy.load(run, flow_samples=0)


def _bridge_episodes():
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    return RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")).episodes()


def test_a_ki_policy_can_act_from_its_fast_tokens_instead_of_the_expert(straight_run):
    from kidata import policy
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    run, _ = straight_run
    episode = next(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")).episodes())
    observation = {"images": {"base_0": episode.images["base_0"].frame(0), "base_1": None},
                   "state": episode.state[0], "prompt": episode.instructions[0]}
    fast = policy.load(run, action_head="fast")
    assert fast.action_head == "fast" and policy.load(run).action_head == "flow"
    actions = fast.sample_actions(observation)
    generated = fast.model.generate(fast.batch(observation), fast.manifest.encoding.max_tokens,
                                    stop_ids=fast.encoder.stop_ids).numpy()
    decoded, _ = fast.encoder.decode_generated_actions(generated, horizon=4, dim=fast.manifest.encoding.action_dim)
    q01, q99 = np.asarray(fast.stats.actions.q01), np.asarray(fast.stats.actions.q99)
    normalized = decoded[0, :, :7]
    by_hand = (normalized + 1) / 2 * (q99 - q01 + 1e-6) + q01
    np.testing.assert_allclose(actions, by_hand, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"action_head 'tokens': choose one of \('auto', 'flow', 'fast'\)"):
        policy.load(run, action_head="tokens")


CLOSED_LOOP = {"train": {"steps": 4}, "eval": {"every": 2}, "checkpoint": {"every": 4}, "optim": {"ema_decay": 0.9}}


def test_train_hands_its_closed_loop_hook_the_ema_weights_at_the_scheduled_steps_and_logs_what_it_returns(
        mixture, tmp_path):
    from kidata.training.checkpoint import read_weights

    seen = []

    def hook(live) -> dict:
        seen.append((live.step, {n: p.detach().clone() for n, p in live.model.named_parameters()}))
        assert live.run.path == tmp_path / "hooked" and live.manifest.sources[0].name == "bridge"
        return {"metaworld_success": 0.25 * live.step}

    hooked = config(mixture, **apply_overrides(CLOSED_LOOP, {"eval": {"metaworld": {"tasks": ["reach"]}}}))
    report = train(hooked, tmp_path / "hooked", closed_loop=hook)
    assert [step for step, _ in seen] == [2, 4]
    ema, averaged = read_weights(tmp_path / "hooked" / "checkpoints" / "step_0000004")
    assert averaged and all(torch.equal(tensor, ema[name]) for name, tensor in seen[-1][1].items())
    evaluations = [json.loads(line) for line in (tmp_path / "hooked" / "metrics.jsonl").read_text().splitlines()
                   if "eval" in json.loads(line)]
    assert [(e["step"], e["eval"]["metaworld_success"]) for e in evaluations] == [(2, 0.5), (4, 1.0)]
    assert report["eval"]["metaworld_success"] == 1.0 and "action_mse" in report["eval"]
    # the trained weights are back after each evaluation: the run trains as one without closed loop
    plain = tmp_path / "plain"
    train(config(mixture, **CLOSED_LOOP), plain)
    assert losses(tmp_path / "hooked") == losses(plain)


def test_a_config_asking_for_closed_loop_evaluation_is_refused_without_a_hook_before_the_run_is_touched(
        mixture, tmp_path):
    with pytest.raises(ValueError, match=r"\[eval\] metaworld asks for closed-loop evaluation and train\(\) was "
                                         r"handed no closed_loop hook: pass closed_loop="):
        train(config(mixture, eval={"metaworld": {"tasks": ["reach"]}}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_closed_loop_evaluation_under_fsdp_on_several_processes_is_refused_before_the_run_is_touched(mixture, tmp_path):
    from types import SimpleNamespace

    from kidata.training.run_dir import RunDir

    sharded = config(mixture, train={"fsdp": True}, eval={"metaworld": {"tasks": ["reach"]}})
    two_processes = SimpleNamespace(world=2, rank=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^\[eval\] metaworld runs on rank 0 with whole weights: not under FSDP on "
                                         r"several processes \(drop \[eval\] metaworld"):
        train_module._train(sharded, RunDir(tmp_path / "run"), two_processes, False, False, lambda live: {})
    assert not (tmp_path / "run").exists()


def test_a_mixture_that_does_not_fit_the_model_is_refused_before_training(mixture, tmp_path):
    with pytest.raises(ManifestMismatch, match="action_horizon: data 4, model 5"):
        train(config(mixture, model={"action_horizon": 5}), tmp_path / "run")
    with pytest.raises(ManifestMismatch, match=r"rebuild its recipe with \[mixture\] action_horizon = 50 and image_size = 224 "
                                               r".* or train with --model.action_horizon 4 --model.image_size 64"):
        train(config(mixture, model={"action_horizon": 50, "image_size": 224}), tmp_path / "run")
    with pytest.raises(ManifestMismatch, match="action tokens: data 'fast', model action_tokens 'bins'"):
        train(config(mixture, model={"action_tokens": "bins"}), tmp_path / "run")
    with pytest.raises(ManifestMismatch, match=r"token vocabulary: data 2048 .* > model vocab_size 1024"):
        train(config(mixture, model={"vocab_size": 1024}), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_augmentation_strength_out_of_range_is_refused_before_the_run_is_written(mixture, tmp_path):
    with pytest.raises(ValueError, match=r"augment crop must be in \(0, 1\].*got 1.5"):
        train(config(mixture, data={"augment": {"crop": 1.5}}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_action_ids_appended_past_the_text_need_a_model_vocabulary_that_covers_them():
    from types import SimpleNamespace

    from kidata.manifest import Encoding

    encoding = Encoding("continuous", "pi05", 10, 4, 112, 80, "quantile", "offset", 2048, (2048, 2559))
    manifest = SimpleNamespace(encoding=encoding, action_tokens="fast", sources=[])
    base = {"image_size": 112, "action_dim": 4, "state_input": "prefix"}
    with pytest.raises(ManifestMismatch, match=r"data 2560 \(text 2048, action ids \[2048, 2559\]\) > model vocab_size 2048 "
                                               r"\(train with --model.vocab_size 2560\)"):
        train_module.check_compatible(manifest, load(TINY, {"model": base}))
    train_module.check_compatible(manifest, load(TINY, {"model": {**base, "vocab_size": 2560}}))


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_last_checkpoint(mixture, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = train_module.KIModel.forward

    def forward(self, batch, **kwargs):
        out = original(self, batch, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_module.KIModel, "forward", forward)
    with pytest.raises(TrainingDiverged, match=r"step 4 .*step_0000002"):
        train(config(mixture, train={"steps": 10}, checkpoint={"every": 2}, eval={"every": 0}), tmp_path / "run")


def test_a_full_disk_during_a_checkpoint_leaves_the_previous_one_intact(mixture, tmp_path, monkeypatch):
    import safetensors.torch

    from kidata.training.checkpoint import latest_checkpoint, load_checkpoint

    original = safetensors.torch.save_file
    seen = {"optimizer": 0}

    def save_file(tensors, path, *args, **kwargs):
        if path.endswith("optimizer.safetensors"):
            seen["optimizer"] += 1
            if seen["optimizer"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="previous checkpoint is intact: .*step_0000002"):
        train(config(mixture, train={"steps": 6}, checkpoint={"every": 2}, eval={"every": 0}), run)
    assert latest_checkpoint(run).name == "step_0000002"
    assert load_checkpoint(latest_checkpoint(run))["trainer"]["step"] == 2
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_overrides_are_typed_and_unknown_keys_name_the_nearest():
    assert parse_overrides(["--optim.lr", "5e-5", "--data.weights", "{droid = 1.0}", "--model.variant=joint"]) == {
        "optim.lr": 5e-5, "data.weights": {"droid": 1.0}, "model.variant": "joint"}
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        TrainConfig.load(TINY, ["--optim.lrr", "1e-3"])
    with pytest.raises(ValueError, match=r"unknown table 'optimizer'.*did you mean 'optim'"):
        TrainConfig.from_mapping({"model": {}, "optimizer": {}})
    assert TrainConfig.load(TINY, ["--optim.betas", "[0.9, 0.99]"]).optim.betas == (0.9, 0.99)


def test_a_second_run_into_the_same_directory_needs_resume(straight_run, mixture):
    run, _ = straight_run
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(mixture, train={"steps": 2}), run)


def test_a_fresh_run_drops_an_earlier_attempt_that_left_no_checkpoint(mixture, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1.killed").write_bytes(b"")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    train(config(mixture, train={"steps": 2}, eval={"every": 0}, log={"every": 1}), run)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in line] == [1, 2]  # each step once, none of the killed attempt's
    assert not (run / "tensorboard" / "events.out.tfevents.1.killed").exists()
    assert ("holds an earlier attempt without a checkpoint (3 metrics.jsonl records, 1 TensorBoard event files): "
            "starting over, they are dropped") in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_process_runs(mixture, tmp_path_factory) -> dict[str, Path]:
    """The same 6 steps on 2 gloo processes, once under DDP and once under FSDP2."""
    runs = {}
    for sharding in ("ddp", "fsdp"):
        port = str(free_port())  # never a fixed port: a concurrent run on it would join this rendezvous
        run = tmp_path_factory.mktemp("two") / sharding
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                   "-m", "kidata.cli", "train", "--model", str(TINY), "--data", mixture, "--out", str(run),
                   *arguments(train={"steps": 6, "fsdp": sharding == "fsdp"}, checkpoint={"every": 3},
                              eval={"every": 0}, optim={"ema_decay": 0.9})]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[sharding] = run
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_process_gloo_run(two_process_runs, sharding):
    run = two_process_runs[sharding]
    trainer = json.loads((run / "checkpoints" / "step_0000006" / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and len(trainer["data_state"]) == 2
    assert [s["rank"] for s in trainer["data_state"]] == [0, 1]
    report = json.loads((run / "report.json").read_text())
    assert report["final"]["samples_per_s"] > 0 and sorted(losses(run)) == list(range(1, 7))
    assert "action_mse" in report["eval"]  # the final evaluation ran on every rank


@pytest.mark.slow
def test_ddp_keeps_every_replica_equal_while_each_rank_trains_on_its_own_batches(two_process_runs):
    for step in (3, 6):
        replicas = json.loads((two_process_runs["ddp"] / "checkpoints" / f"step_{step:07d}" / "trainer.json"
                               ).read_text())["replicas"]
        assert [r["rank"] for r in replicas] == [0, 1]
        assert replicas[0]["parameters_sha256"] == replicas[1]["parameters_sha256"]  # gradients were synchronised
        assert replicas[0]["last_batch_sha256"] != replicas[1]["last_batch_sha256"]  # on different data


@pytest.mark.slow
def test_fsdp_shards_the_parameters_and_its_gathered_weights_are_ddps(two_process_runs):
    replicas = json.loads((two_process_runs["fsdp"] / "checkpoints" / "step_0000006" / "trainer.json"
                           ).read_text())["replicas"]
    assert replicas[0]["parameters_sha256"] != replicas[1]["parameters_sha256"]  # each rank holds its shard
    assert replicas[0]["last_batch_sha256"] != replicas[1]["last_batch_sha256"]
    fsdp = safetensors_at(two_process_runs["fsdp"], 6, "model.safetensors")
    ddp = safetensors_at(two_process_runs["ddp"], 6, "model.safetensors")
    assert set(fsdp) == set(ddp)
    for name in ddp:  # the same seeds, data streams and averaged gradients: the same training
        torch.testing.assert_close(fsdp[name], ddp[name], atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_fsdp_checkpoints_are_one_safetensors_shard_per_rank_without_pickle(two_process_runs):
    step = two_process_runs["fsdp"] / "checkpoints" / "step_0000006"
    for part in ("model", "optimizer", "ema"):
        shards = sorted(p.name for p in (step / part).iterdir())
        assert len(shards) == 2 and all(name.endswith(".safetensors") for name in shards), shards
    for path in step.rglob("*"):
        if path.is_file():
            assert path.suffix in (".safetensors", ".json"), path
    assert set(json.loads((step / "checksums.json").read_text())) == {
        str(p.relative_to(step)) for p in step.rglob("*") if p.is_file() and p.name != "checksums.json"}


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["fsdp", "ddp"])
def test_a_two_process_run_resumes_from_its_checkpoint_to_the_uninterrupted_losses(two_process_runs, mixture, tmp_path,
                                                                                   sharding):
    import shutil

    straight = two_process_runs[sharding]
    run = tmp_path / "resumed"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints" / "step_0000006")
    (run / "checkpoints" / "latest").write_text("step_0000003\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "kidata.cli", "train", "--model", str(TINY), "--data", mixture, "--out", str(run), "--resume",
               *arguments(train={"steps": 6, "fsdp": sharding == "fsdp"}, checkpoint={"every": 3}, eval={"every": 0},
                          optim={"ema_decay": 0.9})]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    expected, actual = losses(straight), losses(run)
    for step in (4, 5, 6):
        assert actual[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    for part in ("model.safetensors", "ema.safetensors"):
        again, before = safetensors_at(run, 6, part), safetensors_at(straight, 6, part)
        assert all(torch.allclose(again[name], before[name], atol=1e-6, rtol=1e-5) for name in before)


@pytest.mark.slow
def test_resuming_two_processes_shards_on_one_loads_them_then_names_the_data_streams(two_process_runs, mixture,
                                                                                    tmp_path):
    import shutil

    run = tmp_path / "one"
    shutil.copytree(two_process_runs["fsdp"], run)
    with pytest.raises(ValueError, match=r"holds 2 data stream\(s\), one per process of the run that wrote it, and this "
                                         r"run has 1 process\(es\): its weights, optimizer and EMA reshard .* resume with "
                                         r"2 process\(es\) .* \[data\] streams = S"):
        train(config(mixture, train={"steps": 6, "fsdp": True}, checkpoint={"every": 3}, eval={"every": 0},
                     optim={"ema_decay": 0.9}), run, resume=True)


STREAMED = {"data": {"streams": 2, "batch_size": 4}, "optim": {"grad_accum": 2, "ema_decay": 0.9},
            "train": {"steps": 6, "fsdp": True}, "checkpoint": {"every": 3}, "eval": {"every": 0}}


@pytest.fixture(scope="module")
def streamed_runs(mixture, tmp_path_factory) -> dict:
    """The same 6 steps over 2 data streams with 2 micro-batches each per step (4 micro-batches per
    step on 1 process, 2 on each of 2), on 1 process, on 2 under FSDP2 and on 2 under DDP."""
    root = tmp_path_factory.mktemp("streamed")
    train(config(mixture, **STREAMED), root / "one")
    run_two_processes(root / "two", mixture, STREAMED)
    run_two_processes(root / "two_ddp", mixture, apply_overrides(STREAMED, {"train": {"fsdp": False}}))
    return {1: root / "one", 2: root / "two", "ddp": root / "two_ddp"}


def restart_at_step_3(run: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run, target)
    shutil.rmtree(target / "checkpoints" / "step_0000006")
    (target / "checkpoints" / "latest").write_text("step_0000003\n")
    return target


def assert_same_training(actual: Path, expected: Path, steps) -> None:
    for step in steps:
        assert losses(actual)[step] == pytest.approx(losses(expected)[step], rel=1e-5, abs=1e-6), step
    for part in ("model.safetensors", "ema.safetensors"):
        after, before = safetensors_at(actual, 6, part), safetensors_at(expected, 6, part)
        for name in before:
            torch.testing.assert_close(after[name], before[name], atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_with_fixed_streams_one_process_trains_as_two_fsdp_processes_accumulating_micro_batches_do(streamed_runs):
    trainer = json.loads((streamed_runs[1] / "checkpoints" / "step_0000006" / "trainer.json").read_text())
    assert trainer["world_size"] == 1 and [s["rank"] for s in trainer["data_state"]] == [0, 1]
    assert_same_training(streamed_runs[1], streamed_runs[2], range(1, 7))


@pytest.mark.slow
def test_ddp_accumulating_micro_batches_on_two_processes_trains_as_one_process_does(streamed_runs):
    trainer = json.loads((streamed_runs["ddp"] / "checkpoints" / "step_0000006" / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and trainer["replicas"][0]["parameters_sha256"] == trainer["replicas"][1][
        "parameters_sha256"]
    assert_same_training(streamed_runs["ddp"], streamed_runs[1], range(1, 7))


@pytest.mark.slow
def test_a_run_saved_on_two_processes_resumes_on_one_to_the_uninterrupted_losses(streamed_runs, mixture, tmp_path):
    run = restart_at_step_3(streamed_runs[2], tmp_path / "two_to_one")
    train(config(mixture, **STREAMED), run, resume=True)
    assert_same_training(run, streamed_runs[2], (4, 5, 6))


@pytest.mark.slow
def test_a_run_saved_on_one_process_resumes_on_two_to_the_uninterrupted_losses(streamed_runs, mixture, tmp_path):
    run = restart_at_step_3(streamed_runs[1], tmp_path / "one_to_two")
    run_two_processes(run, mixture, STREAMED, "--resume")
    assert_same_training(run, streamed_runs[1], (4, 5, 6))


def test_streams_that_the_processes_do_not_divide_are_refused(mixture):
    from kidata.training.streams import StreamLayout

    assert StreamLayout.of(4, 1, 2) == StreamLayout(4, (2, 3)) and StreamLayout.of(0, 1, 2) == StreamLayout(2, (1,))
    with pytest.raises(ValueError, match=r"\[data\] streams = 3 is not a multiple of the 2 processes"):
        StreamLayout.of(3, 0, 2)
    with pytest.raises(ValueError, match=r"data.streams must be >= 0 \(0: one per process\), got -1"):
        config(mixture, data={"streams": -1})


@pytest.mark.slow
def test_an_fsdp_checkpoint_serves_and_exports_on_one_process(two_process_runs, tmp_path):
    from kidata import policy
    from kidata.cli import main

    run = two_process_runs["fsdp"]
    served = policy.load(run).model.state_dict()
    ema = safetensors_at(run, 6, "ema.safetensors")
    assert all(torch.equal(served[name], ema[name]) for name in ema)  # the shards, gathered here
    assert main(["export", "weights", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0


@pytest.mark.slow
def test_a_damaged_shard_is_named_and_the_previous_checkpoint_used(two_process_runs, tmp_path):
    import shutil

    from kidata.training.checkpoint import newest_complete

    run = tmp_path / "damaged"
    shutil.copytree(two_process_runs["fsdp"], run)
    shard = sorted((run / "checkpoints" / "step_0000006" / "optimizer").iterdir())[1]
    shard.write_bytes(shard.read_bytes()[:100])
    path, notices = newest_complete(run)
    assert path.name == "step_0000003"
    assert len(notices) == 1 and shard.name in notices[0] and "truncated" in notices[0]


@pytest.mark.slow
def test_fsdps_sharded_weight_ema_gathers_to_ddps(two_process_runs):
    fsdp = safetensors_at(two_process_runs["fsdp"], 6, "ema.safetensors")
    ddp = safetensors_at(two_process_runs["ddp"], 6, "ema.safetensors")
    weights = safetensors_at(two_process_runs["ddp"], 6, "model.safetensors")
    assert set(fsdp) == set(ddp) == set(weights)
    for name in ddp:
        torch.testing.assert_close(fsdp[name], ddp[name], atol=2e-5, rtol=1e-4)
    assert any(not torch.equal(ddp[name], weights[name]) for name in ddp)  # an average, not the weights


def test_initialization_from_a_paligemma_checkpoint(mixture, tmp_path, monkeypatch):
    """train.init_from loads the backbone before step 1 (lr 0 keeps it through one step)."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from kidata.model.weights import translate
    from kidata.tokenizers import text

    # the demo tokenizer has PaliGemma's layout at 2048 ids: the tiny checkpoint's tokenizer here
    monkeypatch.setattr(text, "PALIGEMMA_VOCAB_SIZE", 2048)

    hf = transformers.PaliGemmaConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16, "projection_dim": 64, "vision_use_head": False},
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 2048, "model_type": "gemma"},
        image_token_id=2047, projection_dim=64, hidden_size=64)
    torch.manual_seed(5)
    transformers.PaliGemmaForConditionalGeneration(hf).save_pretrained(tmp_path / "paligemma")
    run = tmp_path / "run"
    train(config(mixture, train={"steps": 1, "init_from": tmp_path / "paligemma"}, optim={"lr": 0.0},
                 eval={"every": 0}), run)
    trained = load_file(str(run / "checkpoints" / "step_0000001" / "model.safetensors"))
    source = load_file(str(tmp_path / "paligemma" / "model.safetensors"))
    checked = 0
    for key, tensor in source.items():
        name = translate(key)
        if name is not None:
            torch.testing.assert_close(trained[name], tensor)
            checked += 1
    from kidata.model.ki_model import KIModel

    backbone = sum(1 for _ in KIModel(config(mixture).model).backbone_parameters())
    assert checked == backbone  # every backbone tensor came from the checkpoint


@pytest.mark.parametrize("init_format", ["paligemma", "openpi"])
def test_a_pretrained_init_on_a_mixture_built_with_another_text_tokenizer_is_refused_naming_both(
        mixture, tmp_path, init_format):
    run = tmp_path / "run"
    with pytest.raises(ManifestMismatch, match=r"train.init_from 'google/paligemma-3b-pt-224' \(init_format "
                                               rf"'{init_format}'\) holds PaliGemma's token embedding, the mixture "
                                               r".*manifest.json was built with text tokenizer 'tokenizers/demo-text' "
                                               r"\(2048 ids, PaliGemma's has 257152\)"):
        train(config(mixture, train={"init_from": "google/paligemma-3b-pt-224", "init_format": init_format}), run)
    assert not run.exists()  # refused before the run directory is made


def safetensors_at(run: Path, step: int, name: str) -> dict:
    """Whole tensors of a checkpoint part ("model.safetensors", ...), whether written whole or as
    an FSDP2 run's shards."""
    from kidata.training.checkpoint import read_full

    return read_full(run / "checkpoints" / f"step_{step:07d}", name.removesuffix(".safetensors"))


def test_the_weight_ema_is_the_decayed_average_of_the_steps_weights(mixture, tmp_path):
    """ema_0 = initial weights; ema_s = d * ema_(s-1) + (1 - d) * weights_s, checked by hand over
    three steps from the checkpointed weights of each."""
    run = tmp_path / "ema"
    cfg = config(mixture, train={"steps": 3}, checkpoint={"every": 1, "keep": 3}, eval={"every": 0}, optim={"ema_decay": 0.6})
    train(cfg, run)
    torch.manual_seed(cfg.train.seed)
    from kidata.model.ki_model import KIModel

    average = {n: p.detach().float() for n, p in KIModel(cfg.model).named_parameters()}
    for step in (1, 2, 3):
        weights = safetensors_at(run, step, "model.safetensors")
        average = {n: 0.6 * a + 0.4 * weights[n].float() for n, a in average.items()}
    ema = safetensors_at(run, 3, "ema.safetensors")
    assert set(ema) == set(average)
    for name, value in average.items():
        torch.testing.assert_close(ema[name], value, atol=1e-6, rtol=1e-5)


def test_pruning_keeps_exactly_the_newest_keep_checkpoints(mixture, tmp_path):
    run = tmp_path / "pruned"
    train(config(mixture, train={"steps": 4}, checkpoint={"every": 1, "keep": 2}, eval={"every": 0}), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000003", "step_0000004"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"


def test_gradient_accumulation_steps_on_the_mean_of_the_micro_batch_gradients(mixture, tmp_path):
    """One optimizer step over 2 micro-batches of 4: the logged loss and gradient norm are the
    mean micro loss and the norm of the mean micro gradient, recomputed here from the same
    samples and flow noise."""
    run = tmp_path / "accum"
    cfg = config(mixture, train={"steps": 1}, optim={"grad_accum": 2, "clip_norm": 1e9}, data={"batch_size": 4}, eval={"every": 0})
    record = train(cfg, run)["final"]
    torch.manual_seed(cfg.train.seed)
    from kidata.loader import Augment
    from kidata.model.ki_model import KIModel
    from kidata.training.trainer import _loader, flow_inputs

    net = KIModel(cfg.model)
    from kidata.manifest import Manifest

    manifest, _ = Manifest.read(mixture)
    _, loader = _loader(cfg, mixture, "train", 0, 1, manifest, batch_size=4, workers=0,
                        augment=Augment.from_setting(cfg.data.augment))
    batches = iter(loader)
    losses_seen = []
    for micro in range(2):
        batch = next(batches)
        noise, t = flow_inputs(cfg.train.seed, 0, 0, micro, tuple(batch["actions"].shape))
        loss = net(batch, noise=noise, t=t)["loss"]
        (loss / 2).backward()
        losses_seen.append(float(loss.detach()))
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters() if p.grad is not None))
    assert record["loss"] == pytest.approx(np.mean(losses_seen), rel=1e-4)
    assert record["grad_norm"] == pytest.approx(float(norm), rel=1e-4)


def test_resuming_on_a_rebuilt_mixture_is_refused_naming_what_changed(mixture, tmp_path):
    """Same --data path, other bytes: the run's saved manifest names the tokenizer it trained with."""
    import shutil

    from support.recipes import write_recipe

    from kidata.manifest import ManifestMismatch

    data = tmp_path / "data"
    shutil.copytree(Path(mixture).parent, data)
    run = tmp_path / "run"
    train(config(str(data / "manifest.json"), train={"steps": 1}, eval={"every": 0}), run)
    other = write_recipe(tmp_path / "other.toml", units=1,
                         fast_tokenizer={"fit": True, "vocab_size": 280, "scale": 10.0})  # another FAST tokenizer
    build(load_recipe(other), str(data), progress=False, force=True)
    with pytest.raises(ManifestMismatch, match="fast_sha256: build has"):
        train(config(str(data / "manifest.json"), train={"steps": 2}, eval={"every": 0}), run, resume=True,
              allow_config_change=True)


def test_wandb_logging_offline_continues_the_same_run_on_resume(mixture, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the 'wandb' extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "wandb-run"
    common = {"log": {"wandb": True}, "eval": {"every": 0}, "checkpoint": {"every": 1}}
    train(config(mixture, train={"steps": 1}, **common), run)
    run_id = (run / "wandb_run_id").read_text().strip()
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    train(config(mixture, train={"steps": 2}, **common), run, resume=True, allow_config_change=True)
    assert (run / "wandb_run_id").read_text().strip() == run_id
    assert len(sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # the same run id, continued


def test_wandb_without_the_extra_names_the_install_command(mixture, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install 'kidata\[wandb\]'"):
        train(config(mixture, train={"steps": 1}, log={"wandb": True}, eval={"every": 0}), tmp_path / "r")


HOST_READS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__", "__index__", "nonzero")


@pytest.fixture(scope="module")
def counted_run(mixture, tmp_path_factory) -> dict:
    """6 steps logged every 3rd (checkpoint at the end only, no evaluation), with every host read
    of a tensor value made by kidata code counted per step (step n runs from its learning-rate
    update to the next one's): on an accelerator each such read waits for the queued kernels. Reads
    inside the DataLoader are not counted (collate works on host tensors before the copy), nor
    ``.numpy()`` (a device tensor refuses it)."""
    import sys as system

    kidata_root = str(ROOT / "kidata")
    counts: dict[int, list[str]] = {}
    fused: list[int] = []
    current = {"step": 0}
    patch = pytest.MonkeyPatch()

    def counting(name, original):
        def method(*args, **kwargs):
            frame = system._getframe(1)
            caller = frame.f_code.co_filename
            if caller.startswith(kidata_root):
                outer = frame
                while outer is not None and "torch/utils/data/" not in outer.f_code.co_filename:
                    outer = outer.f_back
                if outer is None:
                    counts.setdefault(current["step"], []).append(f"{name} {Path(caller).name}:{frame.f_lineno}")
            return original(*args, **kwargs)
        return method

    for name in HOST_READS:
        patch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    patch.setattr(torch, "nonzero", counting("torch.nonzero", torch.nonzero))
    learning_rate = train_module.learning_rate

    def marked(config, step):
        current["step"] = step + 1
        return learning_rate(config, step)

    lerp = torch._foreach_lerp_

    def counted_lerp(*args, **kwargs):
        fused.append(current["step"])
        return lerp(*args, **kwargs)

    patch.setattr(train_module, "learning_rate", marked)
    patch.setattr(torch, "_foreach_lerp_", counted_lerp)
    try:
        train(config(mixture, train={"steps": 6}, log={"every": 3}, checkpoint={"every": 100}, eval={"every": 0},
                     optim={"ema_decay": 0.9}), tmp_path_factory.mktemp("counted") / "run")
    finally:
        patch.undo()
    return {"reads": counts, "fused_ema_steps": fused}


def test_a_step_reads_nothing_from_the_device_except_one_transfer_at_log_steps(counted_run):
    reads = counted_run["reads"]
    assert {step: reads.get(step, []) for step in range(1, 6)} == {
        1: [], 2: [], 3: [f"tolist step_metrics.py:{step_metrics_read_line()}"], 4: [], 5: []}


def step_metrics_read_line() -> int:
    """The line of DeviceMetrics.read's one transfer."""
    lines = (ROOT / "kidata" / "training" / "step_metrics.py").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if "env.all_reduce(vector).tolist()" in line)


def test_the_weight_ema_is_updated_by_one_fused_call_per_step(counted_run):
    assert counted_run["fused_ema_steps"] == [1, 2, 3, 4, 5, 6]


def test_training_batches_come_from_the_loader_cut_to_their_longest_row(mixture):
    from kidata.manifest import Manifest
    from kidata.training.trainer import _loader

    cfg = config(mixture)
    manifest, _ = Manifest.read(mixture)
    _, loader = _loader(cfg, mixture, "train", 0, 1, manifest, batch_size=8, workers=0, augment=None)
    batch = next(iter(loader))
    lengths = batch["token_mask"].sum(dim=1)
    assert batch["tokens"].shape[1] == int(lengths.max()) < manifest.encoding.max_tokens
    for key in ("tokens", "ar", "loss", "token_mask"):
        assert batch[key].shape == batch["token_mask"].shape
