"""Fault injection: a run of days never restarts from step 0 by accident, a damaged checkpoint is
skipped with a notice naming the file, and a refused resume changes nothing in the run.

Each test plants one fault in a real run (the Bridge + VQAv2 fixture build, tiny preset) and
states what kidata must do about it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from test_train import config, mixture  # noqa: E402,F401 - the module-scoped build fixture

from kidata.training.checkpoint import CheckpointError, latest_checkpoint  # noqa: E402
from kidata.training.trainer import ResumeRefused, train  # noqa: E402


@pytest.fixture(scope="module")
def finished(mixture, tmp_path_factory) -> Path:  # noqa: F811
    """A 4-step run with checkpoints at steps 2 and 4 (kept: both), copied by each test."""
    run = tmp_path_factory.mktemp("faults") / "run"
    train(config(mixture, "--train.steps", "4", "--checkpoint.every", "2", "--eval.every", "0"), run)
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_latest_naming_a_missing_directory_resumes_from_the_newest_complete_checkpoint(run, mixture, capsys):  # noqa: F811
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    train(config(mixture, "--train.steps", "5", "--checkpoint.every", "2", "--eval.every", "0"), run, resume=True,
          allow_config_change=True)
    assert "names step_0000004, which does not exist" in capsys.readouterr().err
    assert steps_logged(run) == [1, 2, 3, 4, 5]  # continued after step 2, each step logged once


def test_a_fresh_start_is_refused_in_a_directory_with_only_a_dangling_pointer(run, mixture):  # noqa: F811
    for step in ("step_0000002", "step_0000004"):
        shutil.rmtree(run / "checkpoints" / step)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(config(mixture, "--train.steps", "4", "--eval.every", "0"), run)


def test_a_truncated_weights_file_falls_back_to_the_previous_checkpoint_naming_it(run, mixture, capsys):  # noqa: F811
    weights = run / "checkpoints" / "step_0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert latest_checkpoint(run).name == "step_0000002"
    train(config(mixture, "--train.steps", "4", "--checkpoint.every", "2", "--eval.every", "0"), run, resume=True)
    err = capsys.readouterr().err
    assert "model.safetensors has 1000 bytes" in err and "truncated" in err


def test_a_flipped_byte_is_caught_by_the_checksum(run):
    weights = run / "checkpoints" / "step_0000004" / "optimizer.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert latest_checkpoint(run).name == "step_0000002"


def test_when_every_checkpoint_is_damaged_loading_and_resuming_refuse_naming_each(run, mixture):  # noqa: F811
    for step in ("step_0000002", "step_0000004"):
        (run / "checkpoints" / step / "trainer.json").unlink()
    with pytest.raises(CheckpointError, match=r"step_0000004 lacks \['trainer.json'\].*step_0000002 lacks"):
        latest_checkpoint(run)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        train(config(mixture, "--train.steps", "4", "--checkpoint.every", "2", "--eval.every", "0"), run, resume=True)


def test_a_resume_that_changes_the_model_is_refused_and_changes_nothing(run, mixture):  # noqa: F811
    from kidata import policy as policies

    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ResumeRefused, match=r"model.variant: 'ki' -> 'pi0_fast'.*only train.steps"):
        train(config(mixture, "--train.steps", "4", "--checkpoint.every", "2", "--eval.every", "0",
                     "--model.variant", "pi0_fast"), run, resume=True, allow_config_change=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    policies.load(run)  # still loadable


def test_longer_training_on_resume_needs_the_explicit_flag(run, mixture):  # noqa: F811
    longer = config(mixture, "--train.steps", "6", "--checkpoint.every", "2", "--eval.every", "0")
    with pytest.raises(ResumeRefused, match=r"train.steps: 4 -> 6 \(pass --allow-config-change"):
        train(longer, run, resume=True)
    train(longer, run, resume=True, allow_config_change=True)
    assert steps_logged(run) == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 6


def test_resume_on_an_empty_directory_is_an_error_not_a_fresh_run(mixture, tmp_path):  # noqa: F811
    with pytest.raises(ResumeRefused, match="holds no checkpoint to continue; drop --resume"):
        train(config(mixture, "--train.steps", "2", "--eval.every", "0"), tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()


def test_metrics_hold_each_step_once_after_resuming_from_an_earlier_checkpoint(run, mixture):  # noqa: F811
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    (run / "checkpoints" / "latest").write_text("step_0000002\n")
    train(config(mixture, "--train.steps", "4", "--checkpoint.every", "2", "--eval.every", "0"), run, resume=True)
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


@pytest.mark.parametrize("weight", ["nan", "inf", "-1.0", '"abc"', "true"])
def test_a_weight_that_is_not_a_finite_non_negative_number_is_refused_naming_the_source(weight):
    import tomllib

    from kidata.pipelines.recipe import RecipeError, parse_recipe

    data = tomllib.loads(f"""
[mixture]
name = "m"
[[sources]]
name = "scenes"
reader = "metaworld_scenes"
tasks = ["reach"]
weight = {weight}
""")
    with pytest.raises(RecipeError, match=r"\(scenes\): weight = .*(not a number|finite numbers >= 0)"):
        parse_recipe(data)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -0.5])
def test_loader_weights_must_be_finite_and_non_negative(mixture, weight):  # noqa: F811
    from kidata.loader.mixture import MixtureDataset

    with pytest.raises(ValueError, match="weight of source 'bridge' is"):
        MixtureDataset(mixture, weights={"bridge": weight, "vqav2": 1.0})


def test_a_failing_command_ends_in_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from kidata.cli import main

    monkeypatch.delenv("KIDATA_DEBUG", raising=False)
    missing = tmp_path / "missing.toml"
    assert main(["build", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.toml" in err[0] and err[0].startswith("kidata build: ")
    with pytest.raises(OSError):
        main(["--debug", "build", str(missing), "--out", str(tmp_path / "out")])
    monkeypatch.setenv("KIDATA_DEBUG", "1")
    with pytest.raises(OSError):
        main(["build", str(missing), "--out", str(tmp_path / "out")])


def test_fetching_opens_only_http_urls_caps_image_bytes_and_merges_duplicate_urls(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import functools
    import http.server
    import threading

    import pyarrow.parquet as pq

    from kidata.sources import fetch

    secret = tmp_path / "secret.txt"
    secret.write_text("local file")
    served = tmp_path / "served"
    served.mkdir()
    (served / "big.jpg").write_bytes(b"\xff" * 5000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    big = f"http://127.0.0.1:{server.server_address[1]}/big.jpg"
    try:
        urls = [secret.as_uri(), "data:text/plain,hello", big, big]
        pq.write_table(pa.table({"image_url": urls, "image_sha256": [None, None, None, "a" * 64]}),
                       tmp_path / "p.parquet")
        with pytest.MonkeyPatch.context() as patch:  # a 1000-byte cap for a 5000-byte image
            patch.setattr(fetch, "_fetch_one", functools.partial(fetch._fetch_one, max_bytes=1000))
            report = fetch.fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=2, progress=False)
    finally:
        server.shutdown()
    assert report.to_json()["failures_by_reason"] == {"refused_scheme": 2, "too_large": 1}  # big.jpg once
    assert list((tmp_path / "mirror").iterdir()) == []


def test_a_json_that_is_not_a_manifest_is_named_as_such(tmp_path):
    from kidata.manifest import Manifest, ManifestMismatch

    (tmp_path / "config.json").write_text('{"model": {}}')
    with pytest.raises(ManifestMismatch, match=r"config.json is not a kidata manifest \(lacks \['encoding'"):
        Manifest.read(str(tmp_path / "config.json"))
    (tmp_path / "broken.json").write_text('{"encoding": ')
    with pytest.raises(ManifestMismatch, match="broken.json is not valid JSON"):
        Manifest.read(str(tmp_path / "broken.json"))


def test_a_features_json_naming_a_foreign_class_is_refused_before_tfds_imports_it(tmp_path):
    from conftest import shared_path

    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    crafted = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), crafted)
    features = crafted / "features.json"
    features.write_text(features.read_text().replace(
        "tensorflow_datasets.core.features.features_dict.FeaturesDict", "this.FeaturesDict", 1))
    with pytest.raises(ValueError, match=r"names feature class 'this.FeaturesDict', not one of TFDS's own"):
        _ = RldsSource(str(crafted), lookup("bridge_dataset")).builder


def test_units_skipped_by_skip_corrupt_are_counted_in_the_manifest_report_and_console(tmp_path, capsys):
    from conftest import shared_path

    from kidata.cli import main

    copy = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), copy)
    record = next(copy.glob("*-train.tfrecord*"))
    record.write_bytes(record.read_bytes()[: record.stat().st_size * 3 // 4])
    (tmp_path / "recipe.toml").write_text(f"""
[mixture]
name = "corrupt"
action_horizon = 4
image_size = 32
max_tokens = 128
units_per_source = 2
fast_tokenizer = {{ fit = true, vocab_size = 300, scale = 10.0 }}

[[sources]]
name = "bridge"
reader = "rlds"
path = "{copy}"
dataset = "bridge_dataset"
skip_corrupt = true
""")
    assert main(["build", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "SKIPPED {'failed_units': 1}" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert manifest["sources"][0]["skipped"] == {"failed_units": 1} == report["sources"][0]["skipped"]


def test_a_source_that_yields_no_samples_fails_the_build_naming_the_rejections(tmp_path):
    from test_build import write_recipe

    from kidata.pipelines.build import BuildError, build
    from kidata.pipelines.recipe import load_recipe

    recipe = write_recipe(tmp_path / "recipe.toml", units=1)
    recipe.write_text(recipe.read_text().replace("max_tokens = 128", "max_tokens = 12"))
    with pytest.raises(BuildError, match=r"source 'bridge' produced no samples \(rejected \{'too_long'"):
        build(load_recipe(recipe), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists() and (tmp_path / "out" / "build_report.json").exists()


def _shard_path(run_or_manifest: str) -> Path:
    manifest = json.loads(Path(run_or_manifest).read_text())
    shard = next(s for s in manifest["sources"][0]["shards"] if s["split"] == "train" and s["samples"])
    return Path(run_or_manifest).parent / shard["path"]


def drain(dataset, draws: int = 2000) -> None:
    """Reads enough draws to open every train shard of the fixture build."""
    for _ in zip(range(draws), dataset):
        pass


@pytest.fixture
def damaged_build(mixture, tmp_path) -> Path:  # noqa: F811
    copy = tmp_path / "build"
    shutil.copytree(Path(mixture).parent, copy)
    return copy / "manifest.json"


def test_a_token_id_past_the_vocabulary_is_named_with_its_shard_and_sample(damaged_build):
    from kidata.loader.mixture import MixtureDataset, ShardError

    shard = _shard_path(damaged_build)
    data = bytearray(shard.read_bytes())
    member = data.index(b".tokens.npy") // 512 * 512 + 512  # the first sample's tokens, after its tar header
    start = data.index(b"\x93NUMPY", member)
    assert start == member
    header = int.from_bytes(data[start + 8 : start + 10], "little")
    data[start + 10 + header + 3] ^= 0x40  # a high bit of the first token id
    shard.write_bytes(bytes(data))
    dataset = MixtureDataset(str(damaged_build), weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1)
    with pytest.raises(ShardError, match=rf"shard .*{shard.name}, sample .*: token id \d+ outside the vocabulary"):
        drain(dataset)


def test_a_truncated_shard_is_named_with_the_sample_count_it_lost(damaged_build):
    from kidata.loader.mixture import MixtureDataset, ShardError

    shard = _shard_path(damaged_build)
    data = shard.read_bytes()
    shard.write_bytes(data[: (len(data) // 2) // 512 * 512])  # cut at a tar block boundary
    dataset = MixtureDataset(str(damaged_build), weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1)
    # cut mid-sample: the partial sample is named; cut between samples: the lost count is
    with pytest.raises(ShardError, match=rf"shard .*{shard.name}(, sample \S+: lacks| holds \d+ samples, the manifest)"):
        drain(dataset)


def test_verify_shards_refuses_a_shard_whose_sha256_differs(damaged_build):
    from kidata.loader.mixture import MixtureDataset, ShardError

    shard = _shard_path(damaged_build)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # in the tar's zero padding: invisible to every other check
    shard.write_bytes(bytes(data))
    plain = MixtureDataset(str(damaged_build), weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1)
    next(iter(plain))
    checked = MixtureDataset(str(damaged_build), weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1,
                             verify_shards=True)
    with pytest.raises(ShardError, match="does not match the manifest's sha256"):
        drain(checked)


def test_a_build_that_failed_before_writing_anything_does_not_lock_its_output(tmp_path):
    from test_build import write_recipe

    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe

    recipe = write_recipe(tmp_path / "recipe.toml", units=1)
    good = recipe.read_text()
    recipe.write_text(good.replace("bridge_dataset/1.0.0", "bridge_datset/1.0.0"))
    with pytest.raises(Exception, match="bridge_datset"):
        build(load_recipe(recipe), str(tmp_path / "out"), progress=False)
    (tmp_path / "out" / "_state").mkdir(parents=True, exist_ok=True)  # as an older kidata left it
    (tmp_path / "out" / "_state" / "recipe.json").write_text('{"recipe_sha256": "0000", "recipe": {}}')
    recipe.write_text(good)
    manifest = build(load_recipe(recipe), str(tmp_path / "out"), progress=False)  # no --force needed
    assert manifest.sources[0].samples > 0


def test_rebuilding_over_a_missing_or_truncated_shard_rewrites_its_unit_with_the_same_bytes(mixture, tmp_path):  # noqa: F811
    from test_build import write_recipe

    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe
    from kidata.pipelines.verify import verify

    recipe = load_recipe(write_recipe(tmp_path / "recipe.toml", units=2))
    out = tmp_path / "out"
    build(recipe, str(out), progress=False)
    shards = sorted(out.glob("bridge/*.tar"))
    original = {p: p.read_bytes() for p in shards}
    shards[0].unlink()
    shards[-1].write_bytes(original[shards[-1]][:1024])
    assert verify(str(out)) != []
    build(recipe, str(out), progress=False)
    assert verify(str(out)) == []
    assert {p: p.read_bytes() for p in shards} == original


@pytest.mark.parametrize(("key", "value"), [("action_horizon", "0"), ("image_size", "0"), ("max_tokens", "-5"),
                                            ("image_size", '"96"')])
def test_a_mixture_size_that_is_not_a_positive_whole_number_is_refused(key, value):
    import tomllib

    from kidata.pipelines.recipe import RecipeError, parse_recipe

    data = tomllib.loads(f"""
[mixture]
name = "m"
{key} = {value}
[[sources]]
name = "scenes"
reader = "metaworld_scenes"
tasks = ["reach"]
""")
    with pytest.raises(RecipeError, match=rf"\[mixture\]: {key} = .*; it must be a whole number >= 1"):
        parse_recipe(data)


@pytest.mark.parametrize(("chunks", "message"), [(np.zeros((0, 10, 4)), "holds no chunks"),
                                                 (np.full((3, 10, 4), np.nan), "3 of 3 chunks hold NaN")])
def test_fast_commands_refuse_empty_or_non_finite_chunk_files(tmp_path, chunks, message):
    from kidata.cli import main

    np.save(tmp_path / "chunks.npy", chunks)
    with pytest.raises(SystemExit, match=message):
        main(["fast", "fit", "--chunks", str(tmp_path / "chunks.npy"), "--out", str(tmp_path / "tok")])
