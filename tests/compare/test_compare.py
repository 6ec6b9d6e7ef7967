"""``kidata compare`` and the pretrained-backbone path it rests on, on tiny budgets: a ``vlm`` run
on the VLM rows of the real Bridge + VQAv2 fixture mixture initializes every run; runs resume
instead of retraining; the table and plots come from the recorded metrics."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.training import SHAPE, TINY  # noqa: E402
from support.training import config as tiny_config  # noqa: E402

from kidata.compare import compare  # noqa: E402
from kidata.compare.runs import CompareConfig, job_devices  # noqa: E402
from kidata.compare.summary import markdown, steps_to, summarize  # noqa: E402
from kidata.manifest import ManifestMismatch  # noqa: E402
from kidata.training.config import MetaworldEval, TrainConfig  # noqa: E402
from kidata.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    from support.recipes import bridge, vqav2, write_recipe

    root = tmp_path_factory.mktemp("compare")
    return write_recipe(root / "recipe.toml", bridge(), vqav2(weight=0.3, holdout=0.34), units=2)


@pytest.fixture(scope="module")
def compared(recipe, tmp_path_factory) -> tuple[CompareConfig, Path]:
    out = tmp_path_factory.mktemp("cmp")
    config = CompareConfig(recipe=str(recipe), model=str(TINY), out=out, variants=("ki", "pi0_fast"),
                           cotrain=(True, False), seeds=1, steps=4, evaluations=2, overrides=SHAPE)
    from kidata.compare.runs import build_once

    manifest = build_once(config)
    vlm = out / "vlm"
    train(tiny_config(str(manifest), model={"variant": "vlm"}, data={"weights": {"vqav2": 1.0}}, train={"steps": 3},
                 eval={"every": 0}), vlm)
    config = CompareConfig(**{**config.__dict__, "init": str(vlm)})
    return config, manifest


def test_a_vlm_run_trains_the_backbone_alone_and_refuses_robot_data(compared, tmp_path):
    config, manifest = compared
    report = json.loads((config.out / "vlm" / "report.json").read_text())
    assert "flow_loss" not in report["final"] and report["final"]["fast_loss"] > 0
    assert report["final"]["source_mix"] == {"bridge": 0.0, "vqav2": 1.0}
    with pytest.raises(ManifestMismatch, match=r"variant vlm trains the backbone on VLM data alone, the mixture "
                                               r"samples robot sources \['bridge'\]"):
        train(tiny_config(str(manifest), model={"variant": "vlm"}), tmp_path / "refused")


def test_compare_trains_every_arm_from_the_vlm_backbone_and_writes_the_table_and_plots(compared, capsys):
    config, _ = compared
    summary = compare(config)
    assert set(summary["arms"]) == {"ki-cotrain", "pi0_fast-cotrain", "ki-robot", "pi0_fast-robot"}
    out = capsys.readouterr().out
    assert out.count(f"initialized from {config.init}") == 4
    for name in ("ki-robot-s0", "pi0_fast-robot-s0"):  # co-training off: the VLM source is never drawn
        mixes = [json.loads(line).get("source_mix") for line in (config.out / "runs" / name / "metrics.jsonl").open()]
        assert all(mix["vqav2"] == 0.0 for mix in mixes if mix)
    ki = summary["arms"]["ki-cotrain"]
    assert sorted(int(s) for s in ki["curve"]) == [0, 2, 4]  # step 0 (the initialization), then every 2 steps
    assert ki["retention"]["vlm_token_accuracy"]["before"]["n"] == 1
    # a robot-only run is asked the same held-out VLM questions (the manifest's weights, seed 0)
    assert summary["arms"]["ki-robot"]["retention"]["vlm_token_accuracy"]["after"]["n"] == 1
    pi0_fast = summary["arms"]["pi0_fast-robot"]  # 4 steps decode no FAST chunk: no error, not a made-up one
    assert pi0_fast["fast_decode_rate"]["mean"] == 0.0 and pi0_fast["final_action_error"]["mean"] is None
    table = (config.out / "compare.md").read_text()
    assert table.count("\n") == 2 + 4 and "vlm_token_accuracy before -> after" in table
    assert all((config.out / name).stat().st_size > 0 for name in ("action_error.png", "success.png", "retention.png"))


def test_compare_again_retrains_nothing_and_resumes_an_unfinished_run(compared, capsys):
    config, _ = compared
    runs = config.out / "runs"
    before = {run.name: (run / "report.json").stat().st_mtime_ns for run in runs.iterdir()}
    (runs / "ki-robot-s0" / "report.json").unlink()  # as if killed after its last checkpoint
    compare(config)
    out = capsys.readouterr().out
    assert out.count("finished, not retrained") == 3 and "ki-robot-s0: resuming 4 steps" in out
    after = {run.name: (run / "report.json").stat().st_mtime_ns for run in runs.iterdir()}
    assert {k: v for k, v in after.items() if k != "ki-robot-s0"} == {k: v for k, v in before.items() if k != "ki-robot-s0"}


def test_compare_trains_runs_at_once_in_their_own_processes_with_jobs(compared, tmp_path, capfd):
    config, manifest = compared
    (tmp_path / "data").symlink_to(manifest.parent, target_is_directory=True)
    parallel = CompareConfig(**{**config.__dict__, "out": tmp_path, "variants": ("ki",), "steps": 2,
                                "evaluations": 1, "jobs": 2})
    summary = compare(parallel)
    out = capfd.readouterr().out
    assert len(re.findall(r"\] ki-(cotrain|robot)-s0: training 2 steps \(2 at once, \d+ torch threads? each\)", out)) == 2
    assert out.count(f"initialized from {config.init}") == 2  # printed by the two training processes
    assert set(summary["arms"]) == {"ki-cotrain", "ki-robot"}
    assert all((tmp_path / "runs" / name / "report.json").is_file() for name in ("ki-cotrain-s0", "ki-robot-s0"))
    assert job_devices(4, 2) == ["0", "1", "0", "1"] and job_devices(2, 0) == [None, None]  # one per GPU; CPU: none
    with pytest.raises(ValueError, match=r"--jobs 0 must be >= 1"):
        CompareConfig(**{**parallel.__dict__, "jobs": 0})


def test_a_training_process_takes_its_device_before_cuda_starts(monkeypatch):
    import queue

    from kidata.compare.runs import _start_worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # the test process keeps its threads
    devices = queue.Queue()
    devices.put("1")
    _start_worker(1, devices)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_the_summary_is_computed_from_the_recorded_metrics(tmp_path):
    config = CompareConfig(recipe="r", model="m", out=tmp_path, variants=("ki", "pi0"), cotrain=(True,), seeds=2,
                           steps=30, target_mse=0.2)
    def run(errors, success, before, after):
        steps = dict(zip((0, 10, 20, 30), errors))
        evaluations = {s: {"action_mse": e} for s, e in steps.items()}
        evaluations[0]["vlm_exact_match"], evaluations[30]["vlm_exact_match"] = before, after
        evaluations[20]["metaworld_success"], evaluations[30]["metaworld_success"] = success / 2, success
        return {"evaluations": evaluations, "steps_per_s": 2.0, "samples_per_s": 64.0, "tokens_per_s": 3000.0}

    runs = {"ki-cotrain-s0": run([1.0, 0.3, 0.2, 0.1], 0.5, 0.8, 0.7), "ki-cotrain-s1": run([1.0, 0.5, 0.3, 0.15], 0.7, 0.8, 0.6),
            "pi0-cotrain-s0": run([1.0, 0.9, 0.8, 0.7], 0.1, 0.8, 0.2)}  # pi0's second seed never ran
    summary = summarize(config, runs)
    ki, pi0 = summary["arms"]["ki-cotrain"], summary["arms"]["pi0-cotrain"]
    assert ki["steps_to_target"] == {"mean": 25.0, "min": 20.0, "max": 30.0, "n": 2, "reached": 2, "of": 2}
    assert pi0["steps_to_target"]["reached"] == 0 and pi0["steps_to_target"]["of"] == 1
    assert ki["success"] == {"mean": 0.6, "min": 0.5, "max": 0.7, "n": 2}
    assert ki["retention"]["vlm_exact_match"]["before"]["mean"] == 0.8
    assert ki["retention"]["vlm_exact_match"]["after"]["mean"] == pytest.approx(0.65)
    assert ki["curve"][10] == {"mean": 0.4, "min": 0.3, "max": 0.5, "n": 2}
    assert steps_to({0: 0.1, 10: 0.3, 20: 0.2}, 0.2) == 20  # step 0 (before training) never counts
    table = markdown(summary)
    assert ki["success_curve"][20] == {"mean": 0.3, "min": 0.25, "max": 0.35, "n": 2}  # success at each checkpoint
    assert table.splitlines()[0].endswith("| success at steps 20 / 30 |")
    assert "| ki-cotrain | 0.125 [0.1, 0.15] | 25 [20, 30] (2/2 seeds) | 0.6 [0.5, 0.7] | 2 | 3000 |" in table
    assert table.splitlines()[2].endswith("| 0.3 [0.25, 0.35] / 0.6 [0.5, 0.7] |")
    assert "| pi0-cotrain | 0.7 | - (0/1 seeds) | 0.1 | 2 | 3000 |" in table


def test_closed_loop_success_can_be_measured_at_fewer_evaluations_than_the_action_error(tmp_path):
    from types import SimpleNamespace

    from kidata.compare.runs import _overrides
    from kidata.recipe import MixtureConfig, Recipe, SourceConfig

    recipe = Recipe(MixtureConfig("mw"), (SourceConfig("metaworld", "metaworld", options={"tasks": ["reach", "push"]}),), ".")
    manifest = SimpleNamespace(sources=[SimpleNamespace(name="metaworld", kind="robot", weight=1.0)], recipe=recipe)
    config = CompareConfig(recipe="r", model="m", out=tmp_path, steps=800, evaluations=4, metaworld_episodes=3,
                           metaworld_evaluations=2)
    overrides = _overrides(config, tmp_path / "manifest.json", manifest, "ki", False, 0)
    train_config = TrainConfig.load(TINY, overrides)
    assert train_config.eval.every == 200
    assert [s for s in range(0, 801, 200) if train_config.eval.closed_loop_at(s, 800)] == [400, 800]
    assert train_config.eval.metaworld == MetaworldEval(tasks=("reach", "push"), episodes=3, max_steps=300, every=400)
    with pytest.raises(ValueError, match=r"--metaworld-evaluations 3 must divide --evaluations 4 \(evenly spaced"):
        CompareConfig(recipe="r", model="m", out=tmp_path, evaluations=4, metaworld_evaluations=3)


def test_a_careless_comparison_is_refused_in_one_sentence(recipe, tmp_path, capsys):
    from types import SimpleNamespace

    from kidata.cli import main
    from kidata.compare.runs import _overrides, build_once
    from kidata.manifest import Encoding, Manifest, TokenizerRef
    from kidata.recipe import MixtureConfig, Recipe, SourceConfig

    with pytest.raises(ValueError, match=r"--variants \['vlm', 'pi1'\] are not among"):
        CompareConfig(recipe="r", model="m", out=tmp_path, variants=("ki", "vlm", "pi1"))
    robot_only = SimpleNamespace(sources=[SimpleNamespace(name="bridge", kind="robot", weight=1.0)],
                                 recipe=Recipe(MixtureConfig("robot-only"), (SourceConfig("bridge", "rlds"),), "."))
    config = CompareConfig(recipe=str(recipe), model=str(TINY), out=tmp_path)
    with pytest.raises(ValueError, match=r"--cotrain on needs VLM sources; .* has only \['bridge'\] \(use --cotrain off\)"):
        _overrides(config, tmp_path / "manifest.json", robot_only, "ki", True, 0)
    with pytest.raises(ValueError, match="--metaworld-episodes needs a metaworld source"):
        _overrides(CompareConfig(**{**config.__dict__, "metaworld_episodes": 2}), tmp_path / "manifest.json",
                   robot_only, "ki", False, 0)
    (tmp_path / "data").mkdir()
    encoding = Encoding("text", "pi05", 4, 2, 32, 64, "quantile", "openpi", 300, (100, 199))
    other = Manifest("0", Recipe(MixtureConfig("other"), (), "."), "0" * 64, TokenizerRef("t", "0"),
                     TokenizerRef("fast_tokenizer", "0"), encoding)  # a build of another recipe
    (tmp_path / "data" / "manifest.json").write_text(other.dumps())
    with pytest.raises(ValueError, match=r"was built from another recipe than .*recipe.toml \(recipe sha256 "
                                         r"000000000000 vs [0-9a-f]{12}\): use another --out"):
        build_once(config)
    assert main(["compare", "--recipe", str(recipe), "--model", str(TINY), "--out", str(tmp_path),
                 "--cotrain", "maybe"]) == 2
    assert "kidata compare: --cotrain takes on, off or on,off, got ['maybe'] [ValueError" in capsys.readouterr().err
