"""Fault injection in the data path: recipes, fetching, manifests, feature specs, builds, shards and
the FAST commands. Each test plants one fault and states what kidata must do about it: one
sentence naming the file and key, or a counted quarantine; never a raw traceback, a silent skip or
a silent fresh start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")



@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0, "abc", True])
def test_a_weight_that_is_not_a_finite_non_negative_number_is_refused_naming_the_source(weight):
    from support.recipes import RecipeDraft, source

    from kidata.pipelines.recipe import RecipeError, parse_recipe

    draft = RecipeDraft({"name": "m"}, (source("scenes", "metaworld_scenes", tasks=["reach"], weight=weight),))
    with pytest.raises(RecipeError, match=r"\(scenes\): weight = .*(not a number|finite numbers >= 0)"):
        parse_recipe(draft.tables())


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
            report = fetch.fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=2, progress=False,
                                        allowed=["127.0.0.1"])
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
    with pytest.raises(FileNotFoundError, match=r"missing.json: no such manifest \(a build writes OUT/manifest.json"):
        Manifest.read(str(tmp_path / "missing.json"))


def test_a_features_json_naming_a_foreign_class_is_refused_before_tfds_imports_it(tmp_path):
    from support.data import shared_path

    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    crafted = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), crafted)
    features = crafted / "features.json"
    features.write_text(features.read_text().replace(
        "tensorflow_datasets.core.features.features_dict.FeaturesDict", "this.FeaturesDict", 1))
    with pytest.raises(ValueError, match=r"names feature class 'this.FeaturesDict' \(pythonClassName\), not one of "
                                         r"TFDS's own"):
        _ = RldsSource(str(crafted), lookup("bridge_dataset")).builder


def test_a_features_json_in_tfds_legacy_form_naming_a_foreign_class_is_refused_before_tfds_imports_it(tmp_path):
    import sys

    from support.data import shared_path

    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    crafted = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), crafted)
    (crafted / "features.json").write_text(json.dumps({"type": "this.FeaturesDict", "content": {}}))
    sys.modules.pop("this", None)
    with pytest.raises(ValueError, match=r"features.json names feature class 'this.FeaturesDict' \(type\), not one of "
                                         r"TFDS's own"):
        _ = RldsSource(str(crafted), lookup("bridge_dataset")).builder
    assert "this" not in sys.modules  # the module named was never imported


def test_units_skipped_by_skip_corrupt_are_counted_in_the_manifest_report_and_console(tmp_path, capsys):
    from support.data import shared_path
    from support.recipes import RecipeDraft, source

    from kidata.cli import main

    copy = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), copy)
    record = next(copy.glob("*-train.tfrecord*"))
    record.write_bytes(record.read_bytes()[: record.stat().st_size * 3 // 4])
    RecipeDraft({"name": "corrupt", "action_horizon": 4, "image_size": 32, "max_tokens": 128, "units_per_source": 2,
                 "fast_tokenizer": {"fit": True, "vocab_size": 300, "scale": 10.0}},
                (source("bridge", "rlds", path=str(copy), dataset="bridge_dataset", skip_corrupt=True),)
                ).write(tmp_path / "recipe.toml")
    assert main(["build", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "notices {'failed_units': 1}" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert manifest["sources"][0]["skipped"] == {"failed_units": 1} == report["sources"][0]["skipped"]


def test_a_source_that_yields_no_samples_fails_the_build_naming_the_rejections(tmp_path):
    from support.recipes import write_recipe

    from kidata.pipelines.build import BuildError, build
    from kidata.pipelines.recipe import load_recipe

    recipe = write_recipe(tmp_path / "recipe.toml", units=1, max_tokens=12)
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
def damaged_build(mixture, tmp_path) -> Path:
    copy = tmp_path / "build"
    shutil.copytree(Path(mixture).parent, copy)
    return copy / "manifest.json"


def test_a_token_id_past_the_vocabulary_is_named_with_its_shard_and_sample(damaged_build):
    from kidata.loader.mixture import MixtureDataset, MixtureSettings, ShardError
    from kidata.manifest import BuildDir

    shard = _shard_path(damaged_build)
    data = bytearray(shard.read_bytes())
    member = data.index(b".tokens.npy") // 512 * 512 + 512  # the first sample's tokens, after its tar header
    start = data.index(b"\x93NUMPY", member)
    assert start == member
    header = int.from_bytes(data[start + 8 : start + 10], "little")
    data[start + 10 + header + 3] ^= 0x40  # a high bit of the first token id
    shard.write_bytes(bytes(data))
    dataset = MixtureDataset(BuildDir(str(damaged_build)), MixtureSettings(weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1))
    with pytest.raises(ShardError, match=rf"shard .*{shard.name}, sample .*: token id \d+ outside the vocabulary"):
        drain(dataset)


def test_a_truncated_shard_is_named_with_the_sample_count_it_lost(damaged_build):
    from kidata.loader.mixture import MixtureDataset, MixtureSettings, ShardError
    from kidata.manifest import BuildDir

    shard = _shard_path(damaged_build)
    data = shard.read_bytes()
    shard.write_bytes(data[: (len(data) // 2) // 512 * 512])  # cut at a tar block boundary
    dataset = MixtureDataset(BuildDir(str(damaged_build)), MixtureSettings(weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1))
    # cut mid-sample: the partial sample is named; cut between samples: the lost count is
    with pytest.raises(ShardError, match=rf"shard .*{shard.name}(, sample \S+: lacks| holds \d+ samples, the manifest)"):
        drain(dataset)


def test_verify_shards_refuses_a_shard_whose_sha256_differs(damaged_build):
    from kidata.loader.mixture import MixtureDataset, MixtureSettings, ShardError
    from kidata.manifest import BuildDir

    shard = _shard_path(damaged_build)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # in the tar's zero padding: invisible to every other check
    shard.write_bytes(bytes(data))
    plain = MixtureDataset(BuildDir(str(damaged_build)), MixtureSettings(weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1))
    next(iter(plain))
    checked = MixtureDataset(BuildDir(str(damaged_build)), MixtureSettings(weights={"bridge": 1.0, "vqav2": 0.0}, shuffle_buffer=1,
                                                                                verify_shards=True))
    with pytest.raises(ShardError, match="does not match the manifest's sha256"):
        drain(checked)


def test_a_build_that_failed_before_writing_anything_does_not_lock_its_output(tmp_path):
    from support.recipes import write_recipe

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


def test_rebuilding_over_a_missing_or_truncated_shard_rewrites_its_unit_with_the_same_bytes(mixture, tmp_path):
    from support.recipes import write_recipe

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


@pytest.mark.parametrize(("key", "value"), [("action_horizon", 0), ("image_size", 0), ("max_tokens", -5),
                                            ("image_size", "96")])
def test_a_mixture_size_that_is_not_a_positive_whole_number_is_refused(key, value):
    from support.recipes import RecipeDraft, source

    from kidata.pipelines.recipe import RecipeError, parse_recipe

    draft = RecipeDraft({"name": "m", key: value}, (source("scenes", "metaworld_scenes", tasks=["reach"]),))
    with pytest.raises(RecipeError, match=rf"\[mixture\]: {key} = .*: (it must be a whole number >= 1|expected a whole "
                                          "number)"):
        parse_recipe(draft.tables())


@pytest.mark.parametrize(("chunks", "message"), [(np.zeros((0, 10, 4)), "holds no chunks"),
                                                 (np.full((3, 10, 4), np.nan), "3 of 3 chunks hold NaN")])
def test_fast_commands_refuse_empty_or_non_finite_chunk_files(tmp_path, chunks, message):
    from kidata.cli import main

    np.save(tmp_path / "chunks.npy", chunks)
    with pytest.raises(SystemExit, match=message):
        main(["fast", "fit", "--chunks", str(tmp_path / "chunks.npy"), "--out", str(tmp_path / "tok")])


def test_an_rlds_path_that_is_missing_or_not_a_dataset_folder_is_named(tmp_path):
    from kidata.sources.registry import open_source

    with pytest.raises(FileNotFoundError, match=r"nowhere: no such folder; an rlds source's path is the dataset's "
                                                r"<name>/<version> folder"):
        open_source("rlds", path=str(tmp_path / "nowhere"), dataset="bridge_dataset")
    (tmp_path / "bridge" / "1.0.0").mkdir(parents=True)
    (tmp_path / "bridge" / "1.0.0" / "features.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"1.0.0: no dataset_info.json here \(found \['features.json'\]\)"):
        open_source("rlds", path=str(tmp_path / "bridge" / "1.0.0"), dataset="bridge_dataset")


def test_a_text_tokenizer_that_is_neither_a_path_nor_a_loadable_hub_id_is_named(tmp_path, monkeypatch, hub_offline):
    from kidata.tokenizers.text import TextTokenizer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"text tokenizer './toks/mine': {tmp_path}/toks/mine does not exist; "
                                                r"no shipped asset of that name .*; not a Hugging Face hub id \(org/name\); "
                                                r"give a folder holding tokenizer.model or tokenizer.json"):
        TextTokenizer.load("./toks/mine")
    with pytest.raises(FileNotFoundError, match=r"text tokenizer 'tokenizers/mine': .*tokenizers/mine does not exist; "
                                                r".*the Hugging Face model repo is not in the hub cache and could not "
                                                r"be fetched"):
        TextTokenizer.load("tokenizers/mine")


def test_invalid_annotation_json_names_the_file_and_line(tmp_path):
    from kidata.sources.base import load_annotations

    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"episode_id": "e", "start": 0, "stop": 2, "text": "go"}\n{"episode_id": \n')
    with pytest.raises(ValueError, match=r"notes.jsonl: not valid JSON or JSONL at line 1, column 16"):
        load_annotations(bad)


def test_a_vocabulary_below_the_byte_alphabet_says_what_to_choose():
    from kidata.tokenizers.fast import FastTokenizer

    chunks = np.random.default_rng(0).normal(size=(50, 4, 2))
    with pytest.raises(ValueError, match=r"vocab_size 16 is smaller than the \d+-symbol byte alphabet .*choose a "
                                         r"vocab_size above \d+"):
        FastTokenizer.fit(chunks, vocab_size=16)


def test_an_unwritable_build_output_is_refused_before_any_work(tmp_path):
    from support.recipes import write_recipe

    from kidata.pipelines.build import BuildError, build
    from kidata.pipelines.recipe import load_recipe

    (tmp_path / "a-file").write_text("in the way")
    recipe = load_recipe(write_recipe(tmp_path / "recipe.toml", units=1))
    with pytest.raises(BuildError, match=r"a-file/out: cannot write the build there \(NotADirectoryError"):
        build(recipe, str(tmp_path / "a-file" / "out"), progress=False)


def test_a_truncated_tfrecord_read_by_one_worker_ends_the_build_in_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from support.data import shared_path
    from support.recipes import source, write_recipe

    from kidata.cli import main

    monkeypatch.delenv("KIDATA_DEBUG", raising=False)
    copy = tmp_path / "bridge_dataset" / "1.0.0"
    shutil.copytree(shared_path("data", "rlds", "bridge_dataset", "1.0.0"), copy)
    record = sorted(copy.glob("*.tfrecord*"))[0]
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    recipe = write_recipe(tmp_path / "recipe.toml", source("bridge", "rlds", path=str(copy), dataset="bridge_dataset"),
                          units=1)
    assert main(["build", str(recipe), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("kidata build: ") and record.name in err[0], err

