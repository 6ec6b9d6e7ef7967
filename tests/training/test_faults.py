"""Fault injection: a run of days never restarts from step 0 by accident, a damaged checkpoint is
skipped with a notice naming the file, and a refused resume changes nothing in the run.

Each test plants one fault in a real run (the Bridge + VQAv2 fixture build, tiny preset) and
states what kidata must do about it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.builds import folder_bytes  # noqa: E402
from support.training import TINY, arguments, config  # noqa: E402

from kidata.training.checkpoint import CheckpointError, latest_checkpoint, newest_complete  # noqa: E402
from kidata.training.trainer import ResumeRefused, train  # noqa: E402


@pytest.fixture(scope="module")
def finished(mixture, tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4 (kept: both), copied by each test."""
    run = tmp_path_factory.mktemp("faults") / "run"
    train(config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run)
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_latest_naming_a_missing_directory_resumes_from_the_newest_complete_checkpoint(run, mixture, capsys):
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    train(config(mixture, train={"steps": 5}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True,
          allow_config_change=True)
    assert "names step_0000004, which does not exist" in capsys.readouterr().err
    assert steps_logged(run) == [1, 2, 3, 4, 5]  # continued after step 2, each step logged once


def test_a_fresh_start_is_refused_in_a_directory_with_only_a_dangling_pointer(run, mixture):
    for step in ("step_0000002", "step_0000004"):
        shutil.rmtree(run / "checkpoints" / step)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(config(mixture, train={"steps": 4}, eval={"every": 0}), run)


def test_a_truncated_weights_file_falls_back_to_the_previous_checkpoint_naming_it(run, mixture, capsys):
    weights = run / "checkpoints" / "step_0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert latest_checkpoint(run).name == "step_0000002"
    train(config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True)
    err = capsys.readouterr().err
    assert "model.safetensors has 1000 bytes" in err and "truncated" in err


def test_a_flipped_byte_is_caught_by_the_checksum(run):
    weights = run / "checkpoints" / "step_0000004" / "optimizer.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert latest_checkpoint(run).name == "step_0000002"


def test_when_every_checkpoint_is_damaged_loading_and_resuming_refuse_naming_each(run, mixture):
    for step in ("step_0000002", "step_0000004"):
        (run / "checkpoints" / step / "trainer.json").unlink()
    with pytest.raises(CheckpointError, match=r"step_0000004 lacks \['trainer.json'\].*step_0000002 lacks"):
        latest_checkpoint(run)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        train(config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True)


def test_a_resume_that_changes_the_model_is_refused_and_changes_nothing(run, mixture):
    from kidata import policy as policies

    before = folder_bytes(run)
    with pytest.raises(ResumeRefused, match=r"model.variant: 'ki' -> 'pi0_fast'.*only train.steps"):
        train(config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0},
                     model={"variant": "pi0_fast"}), run, resume=True, allow_config_change=True)
    assert folder_bytes(run) == before
    policies.load(run)  # still loadable


def test_longer_training_on_resume_needs_the_explicit_flag(run, mixture):
    longer = config(mixture, train={"steps": 6}, checkpoint={"every": 2}, eval={"every": 0})
    with pytest.raises(ResumeRefused, match=r"train.steps: 4 -> 6 \(pass --allow-config-change"):
        train(longer, run, resume=True)
    train(longer, run, resume=True, allow_config_change=True)
    assert steps_logged(run) == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 6


def test_a_longer_resume_keeps_the_learning_rate_schedule_the_run_was_trained_with(run, mixture, capsys):
    from kidata.training.trainer import learning_rate

    longer = config(mixture, train={"steps": 8}, checkpoint={"every": 2}, eval={"every": 0})
    train(longer, run, resume=True, allow_config_change=True)
    assert "resume: train.steps 4 -> 8; the learning-rate schedule keeps its decay over the run's 4 steps" in capsys.readouterr().err
    saved = json.loads((run / "config.json").read_text())
    assert saved["schedule"]["decay_steps"] == 4
    rates = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines() if "lr" in json.loads(line)]
    kept = dataclasses.replace(longer, schedule=dataclasses.replace(longer.schedule, decay_steps=4))
    assert rates == pytest.approx([learning_rate(kept, step) for step in range(8)])
    final = longer.optim.lr * longer.schedule.final_lr_fraction
    assert rates[-1] == pytest.approx(final) and learning_rate(longer, 7) > final  # stretched, the rate rises again


def test_the_command_line_resumes_a_run_from_its_saved_config_without_the_original_overrides(run, mixture, capsys):
    from kidata.cli import main

    assert main(["train", "--out", str(run), "--resume", "--train.steps", "6", "--allow-config-change"]) == 0
    assert steps_logged(run) == [1, 2, 3, 4, 5, 6]
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["steps"] == 6 and saved["model"]["image_size"] == 64  # SHAPE's override, not retyped
    assert main(["train", "--out", str(run / "nowhere"), "--resume"]) == 2
    assert "config.json does not exist; name the run's --out folder" in capsys.readouterr().err


def _set_checkpoint_wall(checkpoint: Path, wall_s: float | None) -> None:
    """Rewrites trainer.json's training wall time and its checksum, as a checkpoint of a longer run would hold."""
    from kidata.hashing import file_sha256

    trainer = json.loads((checkpoint / "trainer.json").read_text())
    trainer.pop("wall_s") if wall_s is None else trainer.update(wall_s=wall_s)
    (checkpoint / "trainer.json").write_text(json.dumps(trainer))
    sums = json.loads((checkpoint / "checksums.json").read_text())
    sums["trainer.json"] = {"bytes": (checkpoint / "trainer.json").stat().st_size,
                            "sha256": file_sha256(checkpoint / "trainer.json")}
    (checkpoint / "checksums.json").write_text(json.dumps(sums))


def test_a_run_trained_in_parts_reports_its_whole_training_time(run, mixture):
    first = json.loads((run / "report.json").read_text())
    assert first["wall_s"] == first["seconds_this_process"]
    _set_checkpoint_wall(run / "checkpoints" / "step_0000004", 5000.0)  # the first part trained for 5000 s
    train(config(mixture, train={"steps": 6}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True,
          allow_config_change=True)
    report = json.loads((run / "report.json").read_text())
    assert report["wall_s"] == pytest.approx(5000.0 + report["seconds_this_process"], abs=0.2)
    saved = json.loads((run / "checkpoints" / "step_0000006" / "trainer.json").read_text())["wall_s"]
    assert 5000.0 < saved <= report["wall_s"]
    final_eval = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert final_eval["step"] == 6 and 5000.0 < final_eval["wall_s"] <= report["wall_s"]


def test_resuming_a_checkpoint_without_a_wall_time_reports_it_unknown_not_partial(run, mixture):
    _set_checkpoint_wall(run / "checkpoints" / "step_0000004", None)  # written before wall time was counted
    train(config(mixture, train={"steps": 6}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True,
          allow_config_change=True)
    report = json.loads((run / "report.json").read_text())
    assert report["wall_s"] is None and report["seconds_this_process"] > 0


def test_a_training_run_stopped_by_sigterm_names_its_newest_checkpoint_and_how_to_continue(mixture, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "kidata.cli", "train", "--model", str(TINY), "--data", mixture, "--out", str(run),
         *arguments(train={"steps": 100000}, checkpoint={"every": 2}, eval={"every": 0})],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "latest").exists():  # written once a checkpoint is complete
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # what a scheduler or `kill` sends mid-run
    _, stderr = process.communicate(timeout=120)
    newest, _ = newest_complete(run)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (f"kidata train: stopped by SIGTERM; {run}'s newest complete checkpoint "
                                               f"is {newest.name}: the same command with --resume continues from it")


def test_a_run_stopped_before_its_first_checkpoint_is_told_to_start_again(tmp_path):
    from kidata.cli.train import stopped

    assert stopped(tmp_path / "run", signal.SIGINT) == (f"stopped by SIGINT before {tmp_path / 'run'} held a complete "
                                                        "checkpoint; the same command starts it again")


def test_resume_on_an_empty_directory_is_an_error_not_a_fresh_run(mixture, tmp_path):
    with pytest.raises(ResumeRefused, match="holds no checkpoint to continue; drop --resume"):
        train(config(mixture, train={"steps": 2}, eval={"every": 0}), tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()


def test_metrics_hold_each_step_once_after_resuming_from_an_earlier_checkpoint(run, mixture):
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    (run / "checkpoints" / "latest").write_text("step_0000002\n")
    train(config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True)
    assert steps_logged(run) == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def loaded(finished):
    from kidata import policy as policies

    return policies.load(finished)


def observation(loaded, **changes):
    width = len(loaded.stats.state.mean)
    base = {"images": {"base_0": np.zeros((64, 64, 3), dtype=np.uint8), "base_1": None},
            "state": np.zeros(width), "prompt": "put the spoon in the pot"}
    return {**base, **changes}


@pytest.mark.parametrize(("change", "message"), [
    ({"images": {"base_0": np.zeros((64, 64, 3), dtype=np.float32), "base_1": None}},
     r"images\['base_0'\] is float32; expected uint8"),
    ({"images": {"base_0": np.zeros((3, 64, 64), dtype=np.uint8), "base_1": None}},
     r"shape \(3, 64, 64\); expected \[H, W, 3\] RGB \(channel-first"),
    ({"images": {"base_0": np.zeros((64, 64, 4), dtype=np.uint8), "base_1": None}}, r"shape \(64, 64, 4\)"),
    ({"images": {"base_0": np.zeros((64, 64), dtype=np.uint8), "base_1": None}}, r"shape \(64, 64\)"),
    ({"images": {"base_O": np.zeros((64, 64, 3), dtype=np.uint8), "base_1": None}},
     r"unknown \['base_O'\], missing \['base_0'\]"),
    ({"images": {"base_0": None, "base_1": None}}, "every camera is None"),
    ({"images": {}}, r"missing \['base_0', 'base_1'\]"),
    ({"state": np.array([np.nan] * 7)}, "state must be finite"),
    ({"state": np.zeros(3)}, r"state has shape \(3,\); source 'bridge' has state \[7\]"),
    ({"prompt": ""}, "prompt must be a non-empty string"),
    ({"prompt": None}, "prompt must be a non-empty string"),
])
def test_the_policy_refuses_observations_it_would_misread(loaded, change, message):
    from kidata.policy import ObservationError

    with pytest.raises(ObservationError, match=message):
        loaded.sample_actions(observation(loaded, **change))


def test_a_well_formed_observation_with_an_absent_camera_is_accepted(loaded):
    assert loaded.sample_actions(observation(loaded)).shape == (4, 7)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -0.5])
def test_loader_weights_must_be_finite_and_non_negative(mixture, weight):
    from kidata.loader.mixture import MixtureDataset, MixtureSettings
    from kidata.manifest import BuildDir

    with pytest.raises(ValueError, match="weight of source 'bridge' is"):
        MixtureDataset(BuildDir(mixture), MixtureSettings(weights={"bridge": weight, "vqav2": 1.0}))


def test_an_unwritable_run_directory_is_named(mixture, tmp_path):
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(OSError, match=r"a-file/run: cannot create the run directory there"):
        train(config(mixture, train={"steps": 1}), tmp_path / "a-file" / "run")


def test_a_resume_onto_another_mixture_is_refused_even_with_allow_config_change(run, mixture):
    recorded = json.loads((run / "manifest.json").read_text())
    recorded["recipe_sha256"] = "0" * 64  # the run was trained on another recipe's build at this path
    recorded["sources"][0]["shards"][0]["sha256"] = "f" * 64
    (run / "manifest.json").write_text(json.dumps(recorded))
    before = folder_bytes(run)
    with pytest.raises(ResumeRefused, match=r"the mixture differs from the one .*manifest.json records: recipe sha256 "
                                            r"000000000000 -> [0-9a-f]{12}; shards: 1 changed, 0 added, 0 removed "
                                            r"\(e\.g\. bridge/.*\) \(--allow-config-change never covers the data\)"):
        train(config(mixture, train={"steps": 5}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True,
              allow_config_change=True)
    assert folder_bytes(run) == before


def test_a_file_where_the_run_keeps_its_checkpoints_is_refused_before_training(mixture, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("a user's file")
    with pytest.raises(OSError, match=r"run/checkpoints is a file where the run keeps its checkpoints folder"):
        train(config(mixture, train={"steps": 1}), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("table, key, value", [("checkpoint", "every", 0), ("checkpoint", "every", -2),
                                              ("log", "every", 0), ("eval", "every", -1)])
def test_step_intervals_that_are_not_positive_whole_numbers_are_refused_naming_the_key(mixture, table, key, value):
    with pytest.raises(ValueError, match=rf"{table}.{key} must be a whole number >= [01].*got {value}"):
        config(mixture, **{table: {key: value}})


def test_a_resume_whose_copy_of_the_manifest_is_gone_is_refused_rather_than_left_unchecked(run, mixture):
    (run / "manifest.json").unlink()
    before = folder_bytes(run)
    with pytest.raises(ResumeRefused, match=rf"^--resume: {run}/manifest.json is missing: the run's copy of the manifest "
                                            r"it trained on, which a resume checks the mixture against; copy the "
                                            rf"manifest.json of that build there \({mixture}, if it was not rebuilt"):
        train(config(mixture, train={"steps": 5}, checkpoint={"every": 2}, eval={"every": 0}), run, resume=True,
              allow_config_change=True)
    assert folder_bytes(run) == before


def test_a_resume_drops_a_torn_last_metrics_record_and_refuses_damage_elsewhere_changing_nothing(run, mixture, capsys):
    metrics = run / "metrics.jsonl"
    intact = metrics.read_text()
    metrics.write_text(intact.replace('{"step": 2,', 'garbage\n{"step": 2,', 1))
    before = folder_bytes(run)
    resumed = config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0})
    with pytest.raises(ValueError, match=rf"^{metrics}, line \d+: not a metrics record \(.*\); delete that line"):
        train(resumed, run, resume=True)
    assert folder_bytes(run) == before
    metrics.write_text(intact + '{"step": 4, "lo')  # a process killed while appending a record
    (run / "checkpoints" / "latest").write_text("step_0000002\n")
    train(resumed, run, resume=True)
    assert "a torn last record (its process was stopped while writing it) is left out" in capsys.readouterr().err
    assert steps_logged(run) == [1, 2, 3, 4]


def test_a_checkpoint_of_a_run_on_another_mixture_is_refused_though_its_shapes_fit(run, tmp_path):
    from kidata import policy as policies

    other = tmp_path / "other"
    shutil.copytree(run, other)
    recorded = json.loads((other / "manifest.json").read_text())
    recorded["recipe_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=rf"^checkpoint {other}/checkpoints/step_0000004 belongs to the run {other}, "
                                         rf"trained on another mixture \(recipe sha256 000000000000, {run}'s [0-9a-f]{{12}}\)"
                                         rf": it would act with {run}'s normalization and tokenizers; load the run {other}"):
        policies.load(run, checkpoint=other / "checkpoints" / "step_0000004")
    assert policies.load(run, checkpoint="step_0000002").action_head == "flow"  # a bare name is one of the run's


def test_weights_of_another_shape_are_refused_naming_the_tensors_not_with_a_page_of_size_mismatches(run, tmp_path):
    from safetensors.torch import load_file

    from kidata import policy as policies
    from kidata.training.checkpoint import save_checkpoint

    weights = load_file(run / "checkpoints" / "step_0000004" / "model.safetensors")
    weights["action_out.bias"] = torch.zeros(3)
    elsewhere = save_checkpoint(tmp_path / "elsewhere", 4, model=weights, optimizer={"state": {}, "param_groups": []},
                                ema=None, trainer={"step": 4}, keep=1)
    with pytest.raises(KeyError, match=rf"{elsewhere}: weights do not fit the run's model \(action_out.bias: checkpoint "
                                       r"\[3\], model \[8\]; missing \[\], unexpected \[\]\): pass a checkpoint of"):
        policies.load(run, checkpoint=elsewhere)


def test_a_resume_reads_its_mixture_from_where_the_build_is_now_when_its_content_is_the_runs(run, mixture, tmp_path,
                                                                                            capsys):
    moved = tmp_path / "moved"
    shutil.copytree(Path(mixture).parent, moved)
    train(config(str(moved / "manifest.json"), train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run,
          resume=True)
    assert (f"resume: the mixture is read from {moved}/manifest.json (the run recorded {mixture}); its content is "
            f"checked against {run}/manifest.json") in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["data"]["manifest"] == f"{moved}/manifest.json"


def test_a_resume_whose_recorded_mixture_path_is_not_found_says_to_name_where_the_build_is(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative data.manifest, recorded from another folder
    with pytest.raises(FileNotFoundError, match=rf"^out/manifest.json: no such manifest .*; --resume reads the mixture "
                                                rf"where {run}/config.json records it \(data.manifest, relative to the "
                                                r"folder the run was started from\): pass --data with where that build"):
        train(config("out/manifest.json", train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}), run,
              resume=True)


def test_how_a_run_acts_may_change_on_resume_with_the_explicit_flag(run, mixture):
    from kidata import policy as policies

    acting = config(mixture, train={"steps": 4}, checkpoint={"every": 2}, eval={"every": 0}, policy={"replan": 2})
    with pytest.raises(ResumeRefused, match=r"policy.replan: 5 -> 2 \(pass --allow-config-change"):
        train(acting, run, resume=True)
    train(acting, run, resume=True, allow_config_change=True)
    assert policies.load(run).settings.replan == 2
