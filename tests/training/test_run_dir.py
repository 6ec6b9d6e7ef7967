"""The run directory (``kidata.training.run_dir.RunDir``) and the build's folder
(``kidata.manifest.BuildDir``): each layout spelled in one place, read back as written."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kidata.manifest import BuildDir, Encoding, Manifest, TokenizerRef  # noqa: E402
from kidata.recipe import MixtureConfig, Recipe  # noqa: E402
from kidata.training.checkpoint import save_checkpoint  # noqa: E402
from kidata.training.config import TrainConfig  # noqa: E402
from kidata.training.run_dir import RunDir  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[2] / "kidata"


def checkpoint(run: Path, step: int) -> Path:
    return save_checkpoint(run, step, model={"w": torch.full((2,), float(step))},
                           optimizer={"state": {}, "param_groups": []}, ema=None, trainer={"step": step}, keep=5)


def test_a_runs_checkpoints_are_listed_newest_step_first(tmp_path):
    for step in (2, 10, 4):
        checkpoint(tmp_path, step)
    assert [path.name for path in RunDir(tmp_path).checkpoints()] == ["step_0000010", "step_0000004", "step_0000002"]


def test_the_newest_complete_checkpoint_passes_over_a_damaged_newer_one_and_says_why(tmp_path):
    checkpoint(tmp_path, 1)
    newest = checkpoint(tmp_path, 2)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    path, notices = RunDir(tmp_path).newest_complete()
    assert path == tmp_path / "checkpoints" / "step_0000001"
    assert notices == [f"{weights} has {weights.stat().st_size} bytes, {weights.stat().st_size + 4} were written "
                       "(truncated?)"]


def test_a_checkpoint_folder_names_its_run(tmp_path):
    path = checkpoint(tmp_path / "run", 3)
    assert RunDir.of_checkpoint(path) == RunDir(tmp_path / "run")


def test_a_folder_without_config_json_is_refused_as_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}: not a kidata run \(no config.json\); pass the --out "
                                                "folder of `kidata train`$"):
        RunDir(tmp_path).require_run()


def tiny_manifest() -> Manifest:
    encoding = Encoding("text", "pi05", 4, 2, 32, 64, "quantile", "openpi", 300, (100, 199))
    return Manifest("0.1", Recipe(MixtureConfig("m"), (), "."), "ab" * 32, TokenizerRef("tokenizers/demo-text", "0"),
                    TokenizerRef("fast_tokenizer", "1", "fast"), encoding)


def test_a_created_run_holds_its_config_and_copies_of_the_builds_manifest_and_action_tokenizer(tmp_path):
    (tmp_path / "build" / "fast_tokenizer").mkdir(parents=True)
    (tmp_path / "build" / "fast_tokenizer" / "tokenizer.json").write_text('{"bpe": 1}')
    config = TrainConfig.from_mapping({"train": {"steps": 7}})
    run = RunDir(tmp_path / "runs" / "a")
    run.create(config, tiny_manifest(), BuildDir.at(str(tmp_path / "build")))
    assert run.is_run() and run.config() == config
    assert run.manifest() == tiny_manifest()
    assert (run.path / "fast_tokenizer" / "tokenizer.json").read_text() == '{"bpe": 1}'
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "config.json", "fast_tokenizer", "manifest.json"]


def test_a_runs_metrics_and_report_read_back_as_written(tmp_path):
    run = RunDir(tmp_path)
    assert not run.has_metrics() and not run.is_finished() and run.report() == {}
    run.metrics_file.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "eval": {"action_mse": 0.1}}\n')
    run.report_file.write_text(json.dumps({"steps": 2}))
    assert run.metrics() == [{"step": 1, "loss": 2.5}, {"step": 2, "eval": {"action_mse": 0.1}}]
    assert run.is_finished() and run.report() == {"steps": 2}


def test_a_build_dir_places_its_files_beside_the_manifest_it_is_named_by():
    build = BuildDir("gs://bucket/mix/manifest.json")
    assert build.root == "gs://bucket/mix"
    assert build.report_path == "gs://bucket/mix/build_report.json"
    assert build.action_tokenizer_path == "gs://bucket/mix/fast_tokenizer"
    assert build.shard_path("bridge/bridge-train-u0000-00000.tar") == "gs://bucket/mix/bridge/bridge-train-u0000-00000.tar"
    assert BuildDir.at("gs://bucket/mix") == build
    assert BuildDir("manifest.json").root == "."


# the run's and the build's file names, and the modules where each is spelled (besides other meanings
# of the same name: a Hugging Face checkpoint's own config.json, a fitted tokenizer's report.json)
HOMES = {"config.json": {"kidata/training/run_dir.py", "kidata/model/weights.py"},
         "metrics.jsonl": {"kidata/training/run_dir.py"},
         "report.json": {"kidata/training/run_dir.py", "kidata/tokenizers/report.py"},
         "eval.json": {"kidata/training/run_dir.py"},
         "loss_curves.png": {"kidata/training/run_dir.py"},
         "checkpoints": {"kidata/training/checkpoint.py", "kidata/model/weights.py"},
         "manifest.json": {"kidata/manifest.py"},
         "build_report.json": {"kidata/manifest.py"},
         # the folder's name is also the recipe's [mixture] key, which the recipe modules read and record
         "fast_tokenizer": {"kidata/manifest.py", "kidata/pipelines/recipe_limits.py", "kidata/recipe.py",
                            "kidata/pipelines/recipe.py"}}


def spelled_paths(source: str) -> set[str]:
    """The file names among ``HOMES`` that code builds a path from: a string that is the name or
    ends in ``/name`` (messages and docstrings that mention a name in a sentence are not paths)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {name for name in HOMES if node.value == name or node.value.endswith("/" + name)}
    return found


def test_the_spelling_check_finds_a_path_built_from_a_name():
    assert spelled_paths('p = run / "metrics.jsonl"\nq = f"{root}/manifest.json"') == {"metrics.jsonl", "manifest.json"}
    assert spelled_paths('raise ValueError("pass OUT/manifest.json of a build")') == set()


def test_the_run_and_build_file_names_are_spelled_only_in_their_homes():
    strays = sorted(f"{path.relative_to(PACKAGE.parent)}: {name}" for path in PACKAGE.rglob("*.py")
                    for name in spelled_paths(path.read_text())
                    if str(path.relative_to(PACKAGE.parent)) not in HOMES[name])
    assert strays == []


@pytest.mark.parametrize("text, refusal", [
    ("{", r"config.json: not the JSON training wrote \(Expecting property name .*\); restore it from a copy, or print a "
          r"config with kidata train --model PRESET --print-config and start a new run$"),
    ("[]", r"config.json: expected a JSON object of tables \(\{\"model\": \{...\}, ...\}\), got list; restore the file "
           r"training wrote$"),
    ('{"train": 3}', r"config.json: train = 3: expected a table of train's keys; restore the file training wrote$"),
])
def test_a_damaged_config_json_is_refused_naming_the_file_and_what_to_do(tmp_path, text, refusal):
    from kidata.config import ConfigError

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=f"^{tmp_path}/{refusal}"):
        RunDir(tmp_path).config()


def test_a_runs_missing_copies_of_the_builds_manifest_and_action_tokenizer_are_named_as_the_runs(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/manifest.json is missing: the run's copy of the manifest "
                                                rf"of the build it trained on \({tmp_path}/config.json's data.manifest\); "
                                                "copy that build's manifest.json there$"):
        run.manifest()
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/fast_tokenizer is missing: the run's copy of the action "
                                                "tokenizer of the build it trained on; copy that build's "
                                                "fast_tokenizer/ folder there$"):
        run.encoder(tiny_manifest())


def test_a_torn_last_metrics_record_is_left_out_with_a_notice_and_damage_elsewhere_is_named_by_line(tmp_path):
    from kidata.training.run_dir import read_metrics

    run = RunDir(tmp_path)
    run.metrics_file.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo')
    assert read_metrics(run.metrics_file) == ([{"step": 1, "loss": 2.5}], f"{run.metrics_file}, line 2: a torn last "
                                              "record (its process was stopped while writing it) is left out")
    assert run.metrics() == [{"step": 1, "loss": 2.5}]
    run.metrics_file.write_text('{"step": 1, "loss": 2.5}\ngarbage\n{"step": 2, "loss": 2.0}\n')
    with pytest.raises(ValueError, match=rf"^{run.metrics_file}, line 2: not a metrics record \(.*\); delete that line"):
        run.metrics()


def test_a_bare_checkpoint_name_is_one_of_the_runs_checkpoints_and_a_path_stays_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "run")
    saved = checkpoint(run.path, 2)
    assert run.checkpoint_named("step_0000002") == saved
    assert run.checkpoint_named(saved) == saved
    (tmp_path / "step_0000002").mkdir()  # a folder of that name here is what the caller named
    assert run.checkpoint_named("step_0000002") == Path("step_0000002")
    monkeypatch.chdir(run.path)
    path, weights, _ = run.weights(Path("step_0000002"))
    assert path == saved and torch.equal(weights["w"], torch.full((2,), 2.0))


def test_the_weights_of_a_run_without_a_checkpoint_are_refused_saying_when_it_will_have_one(tmp_path):
    from kidata.training.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=rf"^{tmp_path} has no checkpoint yet: its training writes one every "
                                              r"checkpoint.every steps and at its last; use the run once it has one "
                                              r"\(kidata train --out RUN --resume continues it\)$"):
        RunDir(tmp_path).weights()


def test_a_checkpoints_weights_file_named_in_place_of_its_folder_is_refused_naming_the_folder(tmp_path):
    saved = checkpoint(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match=rf"^{saved}/model.safetensors is a file; pass the checkpoint folder "
                                                rf"that holds it \({saved}\)$"):
        RunDir(tmp_path).weights(saved / "model.safetensors")
