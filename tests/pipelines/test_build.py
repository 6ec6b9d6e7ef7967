"""End-to-end builds on the real Bridge, VQAv2 and COCO fixtures: shards decode back to the
episodes, runs are deterministic and resumable, bad recipes are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="builds on RLDS need the 'rlds' extra")

from support.builds import tree_bytes  # noqa: E402
from support.data import shared_path  # noqa: E402
from support.recipes import bridge, coco_detection, write_recipe  # noqa: E402

from kidata.normalize import NormStats, normalize  # noqa: E402
from kidata.pipelines.build import BuildError, build  # noqa: E402
from kidata.pipelines.recipe import RecipeError, load_recipe, parse_recipe  # noqa: E402
from kidata.pipelines.shards import iter_shard, load_npy  # noqa: E402
from kidata.pipelines.verify import verify  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    recipe = load_recipe(write_recipe(root / "recipe.toml"))
    manifest = build(recipe, str(root / "out"), progress=False)
    return recipe, root / "out", manifest


def test_manifest_describes_sources_shards_and_encoding(built):
    _, out, manifest = built
    assert manifest.source_names == ["bridge", "vqav2"]
    bridge = manifest.sources[0]
    assert (bridge.kind, bridge.episodes, bridge.samples) == ("robot", 25, 250)
    assert {shard.split for shard in bridge.shards} == {"train", "val"}
    assert manifest.encoding.action_dim == 7 and manifest.encoding.fast_token_range == (1620, 1919)
    assert set(bridge.norm_stats) == {"state", "actions"}
    assert verify(str(out)) == []


def test_shards_decode_back_to_the_episodes(built):
    from kidata.images import resize_with_pad
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource
    from kidata.tokenizers.fast import FastTokenizer

    recipe, out, manifest = built
    bridge = manifest.sources[0]
    samples = {}
    for shard in bridge.shards:
        for key, members in iter_shard((out / shard.path).read_bytes()):
            samples[key] = (members, shard.split)
    episodes = list(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")).episodes())
    assert len(samples) == sum(e.steps for e in episodes)
    stats = NormStats.from_json(bridge.norm_stats)
    fast = FastTokenizer.load(out / "fast_tokenizer")
    for episode in episodes[:6]:
        splits = set()
        state = normalize(episode.state, stats.state).astype(np.float32)
        actions = normalize(episode.actions, stats.actions).astype(np.float32)
        for step in range(episode.steps):
            members, split = samples[f"{episode.episode_id}_{step:06d}"]
            splits.add(split)
            np.testing.assert_array_equal(load_npy(members["state.npy"]), state[step])
            index = np.minimum(np.arange(step, step + 4), episode.steps - 1)
            np.testing.assert_array_equal(load_npy(members["actions.npy"]), actions[index])
            np.testing.assert_array_equal(load_npy(members["action_valid.npy"]), np.arange(step, step + 4) < episode.steps)
            meta = json.loads(members["meta.json"])
            tokens = load_npy(members["tokens.npy"])
            start, stop = meta["fast_span"]
            decoded, ok = fast.decode([2047 - 128 - tokens[start:stop]], horizon=4, dim=7)
            assert ok.all() and np.abs(decoded[0] - actions[index]).max() < 0.15
            assert load_npy(members["loss.npy"]).sum() == len(tokens) - meta["prefix_length"]
            import io

            from PIL import Image

            for camera in ("base_0", "base_1"):
                stored = np.asarray(Image.open(io.BytesIO(members[f"{camera}.jpg"])))
                expected = resize_with_pad(episode.images[camera].frame(step), 64)
                assert np.abs(stored.astype(int) - expected).mean() < 6  # JPEG tolerance
        assert len(splits) == 1  # a whole episode is held out or not


def test_tokens_equal_the_encoders_output(built):
    from kidata.tokenizers.prompt import SampleEncoder

    recipe, out, manifest = built
    encoder = SampleEncoder.from_manifest(manifest, out / "fast_tokenizer")  # what inference rebuilds
    vqa = manifest.sources[1]
    for shard in vqa.shards:
        for key, members in iter_shard((out / shard.path).read_bytes()):
            expected = {"vqa-458752000": ("What is this photo taken looking through?", "net"),
                        "vqa-458752001": ("What position is this man playing?", "pitcher"),
                        "vqa-458752002": ("What color is the players shirt?", "orange")}[key]
            assert load_npy(members["tokens.npy"]).tolist() == encoder.vqa(*expected).tokens.tolist()


def test_engines_and_worker_counts_give_byte_identical_builds(built, tmp_path):
    recipe, out, _ = built
    build(recipe, str(tmp_path / "two"), workers=2, progress=False)
    assert tree_bytes(tmp_path / "two") == tree_bytes(out)


def test_the_encode_block_size_does_not_change_the_bytes(built, tmp_path, monkeypatch):
    import kidata.pipelines.encode_pass as encode_pass

    recipe, out, _ = built
    monkeypatch.setattr(encode_pass, "ENCODE_BLOCK_STEPS", 5)  # blocks end mid-episode and at its end
    build(recipe, str(tmp_path / "blocks"), progress=False)
    assert tree_bytes(tmp_path / "blocks") == tree_bytes(out)


def test_memory_filesystem_output(built):
    import fsspec

    recipe, out, _ = built
    build(recipe, "memory://kidata-test/out", progress=False)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/kidata-test/out/manifest.json") == (out / "manifest.json").read_bytes()
    assert verify("memory://kidata-test/out") == []


def test_a_killed_build_resumes_to_identical_bytes(built, tmp_path):
    _, out, _ = built
    recipe_path = write_recipe(tmp_path / "recipe.toml")
    target = tmp_path / "killed"
    command = [sys.executable, "-m", "kidata.cli", "build", str(recipe_path), "--out", str(target), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    units = target / "_state" / "units"
    while time.time() < deadline and process.poll() is None and len(list(units.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (target / "manifest.json").exists()
    finished = len(list(units.glob("*.json")))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert tree_bytes(target) == tree_bytes(out)
    report = json.loads((target / "build_report.json").read_text())
    assert finished >= 2 and report["cost"]["pass2"]["jobs"] == 6 - finished  # finished units are not redone


def held_out_ids(source: str, ids: list[str], fraction: float) -> set[str]:
    """The split rule, written independently: held out when sha256("holdout/<source>/<id>")'s
    first 8 bytes, big-endian over 2^64, fall below the fraction."""
    import hashlib

    return {i for i in ids
            if int.from_bytes(hashlib.sha256(f"holdout/{source}/{i}".encode()).digest()[:8], "big") / 2**64 < fraction}


def episodes_by_split(out: Path, source) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"train": set(), "val": set()}
    for shard in source.shards:
        for _, members in iter_shard((out / shard.path).read_bytes()):
            meta = json.loads(members["meta.json"])
            found[shard.split].add(meta.get("episode") or meta.get("example"))
    return found


def test_the_holdout_is_the_hash_rule_at_the_mixtures_fraction(built):
    _, out, manifest = built
    found = episodes_by_split(out, manifest.sources[0])
    everything = sorted(found["train"] | found["val"])
    assert len(everything) == 25 and found["val"] == held_out_ids("bridge", everything, 0.2)
    assert 0 < len(found["val"]) < 12  # a fifth of 25, not four fifths


def test_a_source_none_of_whose_episodes_falls_under_the_holdout_holds_out_the_one_its_hash_ranks_first(
        built, tmp_path, capfd):
    import hashlib

    _, out, manifest = built
    found = episodes_by_split(out, manifest.sources[0])
    ids = sorted(found["train"] | found["val"])
    ranks = {i: int.from_bytes(hashlib.sha256(f"holdout/bridge/{i}".encode()).digest()[:8], "big") / 2**64 for i in ids}
    first = min(ids, key=ranks.get)
    fraction = ranks[first] / 2  # positive, and no episode falls under it
    path = write_recipe(tmp_path / "r.toml", bridge(holdout=fraction), units=1)
    few = build(load_recipe(path), str(tmp_path / "out"), progress=False)
    split = episodes_by_split(tmp_path / "out", few.sources[0])
    assert split["val"] == {first} and split["train"] == set(ids) - {first}
    assert f"no episode of source 'bridge' fell under its holdout fraction; holding out {first}" in capfd.readouterr().err


def test_a_sources_own_holdout_overrides_the_mixtures(tmp_path):
    """37 COCO detection examples, the mixture holding out 0.2 and the source 0.6 of them."""
    path = write_recipe(tmp_path / "r.toml", coco_detection(holdout=0.6), units=1, fast_token_rule="offset",
                        fast_token_offset=300, fast_tokenizer={"bins": 16})  # no robot source to fit on
    recipe = load_recipe(path)
    manifest = build(recipe, str(tmp_path / "out"), progress=False)
    found = episodes_by_split(tmp_path / "out", manifest.sources[0])
    everything = sorted(found["train"] | found["val"])
    assert found["val"] == held_out_ids("coco", everything, 0.6) != held_out_ids("coco", everything, 0.2)


def test_verify_names_a_flipped_and_a_missing_shard(built, tmp_path):
    _, out, manifest = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    flipped, missing = manifest.sources[0].shards[0].path, manifest.sources[1].shards[0].path
    data = bytearray((copy / flipped).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / flipped).write_bytes(bytes(data))
    (copy / missing).unlink()
    problems = verify(str(copy))
    assert len(problems) == 2
    assert problems[0].startswith(f"{flipped}: sha256 ") and problems[1] == f"{missing}: missing"


def test_a_different_recipe_on_the_same_output_is_refused_unless_forced(built, tmp_path):
    recipe, out, _ = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    changed = load_recipe(write_recipe(tmp_path / "changed.toml", seed=7))
    with pytest.raises(BuildError, match="different recipe"):
        build(changed, str(copy), progress=False)
    build(changed, str(copy), force=True, progress=False)
    assert json.loads((copy / "manifest.json").read_text())["recipe"]["mixture"]["seed"] == 7


def test_unknown_recipe_keys_name_the_nearest_valid_key(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'action_horizn'.*'action_horizon'"):
        load_recipe(write_recipe(tmp_path / "r.toml", action_horizn=5))
    with pytest.raises(RecipeError, match="unknown key 'questons'.*'questions'"):
        parse_recipe({"mixture": {"name": "x"}, "sources": [{"name": "v", "reader": "vqav2", "questons": "q.json"}]})


def test_fast_range_colliding_with_detection_loc_tokens_is_refused(tmp_path):
    from kidata.tokenizers.ranges import RangeCollision

    recipe = load_recipe(write_recipe(tmp_path / "r.toml", bridge(), coco_detection(), units=1))
    with pytest.raises(RangeCollision, match="<loc> tokens"):
        build(recipe, str(tmp_path / "out"), progress=False)


def test_the_fix_a_range_collision_names_builds_in_the_same_folder_without_force(tmp_path):
    """Adding COCO detection to a robot recipe, as a user would: the refusal's fix, applied as written,
    builds where the refused build was (it left pass-1 files and a tokenizer, no manifest or shards)."""
    import re

    from kidata.tokenizers.ranges import RangeCollision

    path = write_recipe(tmp_path / "r.toml", bridge(), coco_detection(), units=1)
    with pytest.raises(RangeCollision) as refused:
        build(load_recipe(path), str(tmp_path / "out"), progress=False)
    rule, offset, vocab = re.search(r'fast_token_rule = "(\w+)" and fast_token_offset = (\d+), then train with '
                                    r"--model.vocab_size (\d+)", str(refused.value)).groups()
    path = write_recipe(path, bridge(), coco_detection(), units=1, fast_token_rule=rule, fast_token_offset=int(offset))
    manifest = build(load_recipe(path), str(tmp_path / "out"), progress=False)
    assert manifest.encoding.token_vocab_size == int(vocab)


@pytest.mark.slow
def test_ray_engine_gives_the_same_bytes_as_the_local_pool(built, tmp_path):
    pytest.importorskip("ray", reason="the ray engine needs the 'ray' extra")
    import ray

    recipe, out, _ = built
    try:
        build(recipe, str(tmp_path / "ray"), engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert tree_bytes(tmp_path / "ray") == tree_bytes(out)


def test_detection_and_robot_data_build_with_the_action_range_moved_off_the_loc_tokens(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", bridge(), coco_detection(), units=2, fast_token_rule="offset",
                                      fast_token_offset=300))
    manifest = build(recipe, str(tmp_path / "out"), progress=False)
    coco_entry = manifest.sources[1]
    assert manifest.encoding.fast_token_range == (300, 599)
    assert coco_entry.episodes == 37 and coco_entry.samples + sum(coco_entry.rejected.values()) == 37
    for shard in coco_entry.shards:
        for _key, members in iter_shard((tmp_path / "out" / shard.path).read_bytes()):
            tokens, loss = load_npy(members["tokens.npy"]), load_npy(members["loss.npy"])
            target = tokens[loss]
            assert ((target >= 896) & (target <= 1919)).sum() % 4 == 0  # four <loc> per box


def test_naive_bin_tokens_build_decodes_back_to_the_actions(tmp_path):
    """The paper's naive-token ablation as a recipe setting: 256 bins, every 2nd step kept."""
    from kidata.tokenizers import BinTokenizer, load_action_tokenizer

    path = write_recipe(tmp_path / "recipe.toml", units=2, fast_tokenizer={"bins": 256, "stride": 2})
    manifest = build(load_recipe(path), str(tmp_path / "out"), progress=False)
    assert manifest.action_tokens == "bins"
    tokenizer = load_action_tokenizer(tmp_path / "out" / "fast_tokenizer")
    assert tokenizer == BinTokenizer(n_bins=256, stride=2)
    bridge = manifest.sources[0]
    first, hi = manifest.encoding.fast_token_range
    checked = 0
    for shard in bridge.shards[:1]:
        for _, members in iter_shard((tmp_path / "out" / shard.path).read_bytes()):
            tokens, meta = load_npy(members["tokens.npy"]), json.loads(members["meta.json"])
            start, stop = meta["fast_span"]
            assert stop - start == 2 * 7  # 2 kept steps x 7 dims
            ids = hi - tokens[start:stop]  # openpi rule: ids counted down from the top of the range
            decoded, ok = tokenizer.decode([ids], horizon=4, dim=7)
            actions = load_npy(members["actions.npy"])
            assert ok.all() and np.abs(decoded[0, [0, 2]] - np.clip(actions[[0, 2]], -1, 1)).max() <= 1 / 256 + 1e-6
            checked += 1
    assert checked > 0


def test_bins_with_fast_fit_keys_are_refused(tmp_path):
    path = write_recipe(tmp_path / "recipe.toml", fast_tokenizer={"bins": 256, "vocab_size": 300})
    with pytest.raises(RecipeError, match="vocab_size"):
        load_recipe(path)


def test_build_report_records_what_each_pass_cost(built):
    _, out, _ = built
    cost = json.loads((out / "build_report.json").read_text())["cost"]
    assert cost["pass1"]["jobs"] == 3 and cost["pass2"]["jobs"] == 6  # 3 bridge units; 3 bridge + 3 vqav2
    assert cost["pass1"]["workers"] == cost["pass2"]["workers"] == 1  # one worker: this process
    for phase in ("pass1", "pass2"):
        assert 0 < cost[phase]["job_seconds"] <= cost[phase]["wall_seconds"]
        assert 0 < cost[phase]["worker_peak_rss_mib"] <= cost["coordinator_peak_rss_mib"]
    assert cost["fast_seconds"] > 0
    assert 0 < cost["pass2"]["image_seconds"] < cost["pass2"]["job_seconds"] and "image_seconds" not in cost["pass1"]
