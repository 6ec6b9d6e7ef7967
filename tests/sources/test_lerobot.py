"""LeRobot datasets: the v3.0 fixture written by lerobot itself, a v2.1 layout written here from the
published format, the defects a reader must count, and kidata's LeRobot export read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="LeRobot videos need the 'lerobot' extra (PyAV)")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from support.data import shared_path  # noqa: E402

from kidata.sources.base import ReadReport  # noqa: E402
from kidata.sources.lerobot_meta import LeRobotFormatError  # noqa: E402
from kidata.sources.registry import open_source  # noqa: E402

CAMERAS = {"base_0": "observation.images.image_0", "base_1": "observation.images.image_1"}
MAPPING = {"cameras": CAMERAS, "state": ["observation.state"], "action": ["action"]}


@pytest.fixture(scope="module")
def fixture_root() -> Path:
    return shared_path("data", "lerobot", "bridge_v3")


@pytest.fixture(scope="module")
def expected(fixture_root) -> dict:
    return json.loads(fixture_root.with_name("bridge_v3.expected.json").read_text())


def read_all(root, mapping=MAPPING, *, images=True, **options):
    source = open_source("lerobot", path=str(root), mapping=mapping, name="bridge", **options)
    report = ReadReport()
    return source, list(source.episodes(images=images, report=report)), report


@pytest.fixture
def copy(fixture_root, tmp_path) -> Path:
    """A writable copy of the fixture, for planting defects."""
    target = tmp_path / "bridge_v3"
    shutil.copytree(fixture_root, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


# ------------------------------------------------------------------------------------------ v3.0
def test_every_episode_of_the_fixture_reads_with_its_length_task_and_vectors(fixture_root, expected):
    source, episodes, report = read_all(fixture_root)
    assert report.quarantined.as_dict() == {} and not report.notices
    assert source.fps == 5.0 and len(episodes) == 25
    for episode, truth in zip(episodes, expected["episodes"], strict=True):
        assert episode.steps == truth["length"]
        assert episode.instructions == (truth["task"],)
        assert episode.state.dtype == np.float32 and episode.state.shape == (truth["length"], 7)
        np.testing.assert_array_equal(episode.state[0], np.float32(truth["first_state"]))
        np.testing.assert_array_equal(episode.state[-1], np.float32(truth["last_state"]))
        np.testing.assert_array_equal(episode.actions[0], np.float32(truth["first_action"]))
        np.testing.assert_array_equal(episode.actions[-1], np.float32(truth["last_action"]))
        assert sorted(episode.images) == ["base_0", "base_1"]


def test_decoded_frames_equal_lerobots_own_decoding(fixture_root, expected):
    _, episodes, _ = read_all(fixture_root)
    cameras = {key: camera for camera, key in CAMERAS.items()}
    for check in expected["image_checks"]:
        frame = episodes[check["episode_index"]].images[cameras[check["camera"]]].frame(check["frame_index"])
        assert frame.shape == tuple(check["original_shape_hwc"]) and frame.dtype == np.uint8
        channels = frame.reshape(-1, 3).mean(0) / 255.0
        np.testing.assert_allclose(channels, check["lerobot_decoded_channel_means_01"], atol=1e-6)
        assert abs(frame.mean() / 255.0 - check["original_mean_01"]) < 0.01  # the lossy AV1 round trip


def test_frames_read_out_of_order_equal_frames_read_in_order(fixture_root):
    _, episodes, _ = read_all(fixture_root)
    frames = episodes[7].images["base_0"]
    in_order = frames.array()
    for step in (9, 3, 0, 5):
        np.testing.assert_array_equal(frames.frame(step), in_order[step])


def test_the_lerobot_copy_holds_the_rlds_episodes(fixture_root, expected):
    pytest.importorskip("tensorflow_datasets", reason="the RLDS copy needs the 'rlds' extra")
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    rlds = list(RldsSource(str(shared_path("data", "rlds", "bridge_dataset", "1.0.0")), lookup("bridge_dataset")).episodes())
    _, episodes, _ = read_all(fixture_root)
    for episode, truth in zip(episodes, expected["episodes"], strict=True):
        twin = rlds[truth["source"]["index_in_split"]]
        assert episode.instructions == twin.instructions
        np.testing.assert_array_equal(episode.actions[:, :6], twin.actions[:, :6])
        assert np.abs(episode.images["base_0"].array().astype(int) - twin.images["base_0"].array()).mean() < 8


def test_pass_one_reads_parquet_only(fixture_root, monkeypatch):
    import av

    def refuse(*args, **kwargs):
        raise AssertionError("a statistics pass opened a video")

    monkeypatch.setattr(av, "open", refuse)
    _, episodes, report = read_all(fixture_root, images=False)
    assert len(episodes) == 25 and all(not e.images for e in episodes) and report.quarantined.as_dict() == {}


def test_work_units_are_disjoint_and_cover_every_episode_once(fixture_root):
    source = open_source("lerobot", path=str(fixture_root), mapping=MAPPING)
    everything = [e.episode_id for e in source.episodes(images=False)]
    for count in (1, 4, 25, 40):
        units = source.list_units(count)
        read = [e.episode_id for unit in units for e in source.read(unit, images=False)]
        assert read == everything and len(units) == min(count, 25)


# ------------------------------------------------------------------------------------ refusals
def test_a_missing_feature_names_it_and_lists_the_features(fixture_root):
    with pytest.raises(KeyError, match=r"no feature 'observation\.joints'.*'action', 'episode_index'"):
        open_source("lerobot", path=str(fixture_root), mapping={**MAPPING, "state": ["observation.joints"]})


@pytest.mark.parametrize(("mapping", "message"), [
    (3, r"mapping = 3: expected a table such as"),
    ({**MAPPING, "cameras": ["observation.images.image_0"]},
     r"mapping\.cameras = \['observation\.images\.image_0'\]: expected a table of camera name = feature"),
    ({**MAPPING, "state": "observation.state"},
     r"mapping\.state = 'observation\.state': expected a list of features, e\.g\. \[\"observation\.state\"\]$"),
    ({**MAPPING, "action": [7]}, r"mapping\.action = \[7\]: expected a list of features"),
])
def test_a_mapping_part_of_the_wrong_type_is_refused_naming_the_key_rather_than_read_letter_by_letter(
        fixture_root, mapping, message):
    with pytest.raises(ValueError, match=r"^lerobot source 'bridge': " + message):
        open_source("lerobot", path=str(fixture_root), mapping=mapping, name="bridge")


def test_a_mapping_without_cameras_lists_the_camera_features(fixture_root):
    with pytest.raises(ValueError, match=r"mapping.cameras is missing.*observation\.images\.image_0"):
        open_source("lerobot", path=str(fixture_root), mapping={"state": ["observation.state"]})


def test_an_unknown_camera_feature_is_named(fixture_root):
    with pytest.raises(KeyError, match=r"no camera feature 'observation\.images\.wrist'"):
        open_source("lerobot", path=str(fixture_root), mapping={"cameras": {"left_wrist_0": "observation.images.wrist"}})


def test_an_unknown_codebase_version_is_refused_naming_it(copy):
    info = json.loads((copy / "meta" / "info.json").read_text())
    (copy / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(LeRobotFormatError, match=r"codebase_version 'v1\.6' is not supported .*v3\.0, v2\.1"):
        open_source("lerobot", path=str(copy), mapping=MAPPING)


def test_a_folder_that_is_not_a_dataset_is_named(tmp_path):
    with pytest.raises(LeRobotFormatError, match=r"is not a LeRobot dataset: .*meta/info\.json is missing"):
        open_source("lerobot", path=str(tmp_path), mapping=MAPPING)


def test_an_unreachable_hub_dataset_names_the_repo_and_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"repo_id 'lerobot/aloha_sim': the Hugging Face dataset repo at "
                                                r"revision v3\.0 is not in the hub cache.*the hub cache looked in: "
                                                + str(tmp_path)):
        open_source("lerobot", repo_id="lerobot/aloha_sim", revision="v3.0", mapping=MAPPING)


# ------------------------------------------------------------------------------- quarantines
def rewrite_rows(root: Path, change) -> None:
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    pq.write_table(pa.Table.from_pylist(change(rows), schema=table.schema), path)


def test_non_finite_actions_are_quarantined(copy):
    def plant(rows):
        rows[31]["action"][2] = float("nan")  # episode 3
        return rows

    rewrite_rows(copy, plant)
    _, episodes, report = read_all(copy, images=False)
    assert report.quarantined.as_dict() == {"nonfinite_actions": 1} and report.examples["nonfinite_actions"] == ["episode 3"]
    assert len(episodes) == 24


def test_timestamps_off_the_fps_grid_are_quarantined(copy):
    def plant(rows):
        rows[25]["timestamp"] += 0.05  # episode 2, frame 5: a quarter frame late at 5 fps
        return rows

    rewrite_rows(copy, plant)
    _, episodes, report = read_all(copy, images=False)
    assert report.quarantined.as_dict() == {"timestamps_off_grid": 1} and len(episodes) == 24


def truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: (root / "meta" / "info.json").write_text(
        json.dumps({**json.loads((root / "meta" / "info.json").read_text()), "fps": 0})),
     r"meta/info.json: fps = 0; a dataset's frame rate is a number > 0"),
    (lambda root: truncate(root / "meta" / "info.json", 100), r"meta/info.json: not valid JSON \("),
    (lambda root: truncate(root / "data" / "chunk-000" / "file-000.parquet", 2000),
     r"data/chunk-000/file-000.parquet: not a readable parquet file \(.*\); the file is truncated or damaged"),
    (lambda root: truncate(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", 500),
     r"meta/episodes/chunk-000/file-000.parquet: not a readable parquet file"),
], ids=["fps-0", "truncated-info-json", "truncated-data-parquet", "truncated-episodes-parquet"])
def test_a_damaged_metadata_or_data_file_is_named_in_one_sentence(copy, damage, message):
    damage(copy)
    with pytest.raises(LeRobotFormatError, match=message):
        read_all(copy)


def test_a_missing_row_is_a_length_mismatch(copy):
    rewrite_rows(copy, lambda rows: rows[:44] + rows[45:])  # episode 4 loses frame 4
    _, episodes, report = read_all(copy, images=False)
    assert report.quarantined.as_dict() == {"length_mismatch": 1} and len(episodes) == 24
    assert report.examples["length_mismatch"] == ["episode 4"]
    assert report.notices["row_range_mismatch"] == 1  # the others' rows are still found by index


def test_episode_index_gaps_are_counted(copy):
    path = copy / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.filter(pa.compute.not_equal(table["episode_index"], 5)), path)
    _, episodes, report = read_all(copy, images=False)
    assert report.notices["episode_index_gaps"] == 1 and len(episodes) == 24


def test_a_missing_video_is_quarantined_in_both_passes(copy):
    (copy / "videos" / "observation.images.image_1" / "chunk-000" / "file-000.mp4").unlink()
    for images in (False, True):
        _, episodes, report = read_all(copy, images=images)
        assert report.quarantined.as_dict() == {"video_missing": 25} and episodes == []


def test_a_truncated_video_is_quarantined(copy):
    video = copy / "videos" / "observation.images.image_0" / "chunk-000" / "file-000.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    _, episodes, report = read_all(copy)
    assert set(report.quarantined) <= {"video_unreadable", "video_frame_count"}
    assert sum(report.quarantined.values()) == 25 - len(episodes) and len(episodes) < 25


def test_a_video_span_that_misses_frames_is_a_frame_count_mismatch(copy):
    path = copy / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[6]["videos/observation.images.image_0/to_timestamp"] -= 0.4  # two frames short
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_table(path).schema), path)
    _, episodes, report = read_all(copy)
    assert report.quarantined.as_dict() == {"video_frame_count": 1} and len(episodes) == 24


def test_episodes_spread_over_several_data_files_read_the_same(copy, fixture_root):
    data = copy / "data" / "chunk-000"
    table = pq.read_table(data / "file-000.parquet")
    first, second = table.slice(0, 130), table.slice(130)  # episodes 0-12 | 13-24
    pq.write_table(first, data / "file-000.parquet")
    (copy / "data" / "chunk-001").mkdir()
    pq.write_table(second, copy / "data" / "chunk-001" / "file-003.parquet")
    path = copy / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows[13:]:
        row["data/chunk_index"], row["data/file_index"] = 1, 3
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_table(path).schema), path)
    _, split, report = read_all(copy)
    _, whole, _ = read_all(fixture_root)
    assert report.quarantined.as_dict() == {} and not report.notices and len(split) == 25
    for a, b in zip(split, whole):
        np.testing.assert_array_equal(a.state, b.state)
        np.testing.assert_array_equal(a.images["base_1"].frame(9), b.images["base_1"].frame(9))


# ------------------------------------------------------------------------------------------- v2.1
def write_v21(root: Path, episodes: list[dict], *, fps: int = 10, short_video: int | None = None,
              as_images: bool = False) -> Path:
    """A LeRobot v2.1 dataset from the published layout: meta/info.json, tasks.jsonl, episodes.jsonl,
    data/chunk-000/episode_NNNNNN.parquet and videos/chunk-000/<key>/episode_NNNNNN.mp4 (or, with
    ``as_images``, the camera as an image feature: PNG bytes in the parquet, as datasets stores them)."""
    import io

    import av
    from PIL import Image

    key = "observation.images.top"
    info = {"codebase_version": "v2.1", "robot_type": "test", "fps": fps, "chunks_size": 1000,
            "total_episodes": len(episodes), "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": {key: {"dtype": "image" if as_images else "video", "shape": [64, 64, 3],
                               "names": ["height", "width", "channel"]},
                         "observation.state": {"dtype": "float32", "shape": [3], "names": None},
                         "action": {"dtype": "float32", "shape": [2], "names": None},
                         **{k: {"dtype": t, "shape": [1], "names": None} for k, t in
                            (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                             ("index", "int64"), ("task_index", "int64"))}}}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    tasks = sorted({e["task"] for e in episodes})
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                       for i, t in enumerate(tasks)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": i, "tasks": [e["task"]], "length": len(e["action"])}) + "\n"
        for i, e in enumerate(episodes)))
    start = 0
    for index, episode in enumerate(episodes):
        steps = len(episode["action"])
        table = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(episode["state"].ravel(), pa.float32()), 3),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(episode["action"].ravel(), pa.float32()), 2),
            "timestamp": pa.array(np.arange(steps, dtype=np.float32) / fps),
            "frame_index": pa.array(np.arange(steps)), "episode_index": pa.array(np.full(steps, index)),
            "index": pa.array(np.arange(start, start + steps)),
            "task_index": pa.array(np.full(steps, tasks.index(episode["task"])))})
        if as_images:
            def png(image):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                return {"bytes": buffer.getvalue(), "path": None}

            images = pa.array([png(image) for image in episode["frames"]],
                              pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            table = table.append_column(key, images)
        start += steps
        data = root / "data" / "chunk-000" / f"episode_{index:06d}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data)
        if as_images:
            continue
        video = root / "videos" / "chunk-000" / key / f"episode_{index:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(video), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"g": "2", "crf": "18"})
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p"
            frames = episode["frames"][:-1] if index == short_video else episode["frames"]
            for number, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = number
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return root


def v21_episodes(count: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    episodes = []
    for index in range(count):
        steps = 6 + index
        frames = np.zeros((steps, 64, 64, 3), np.uint8)
        for step in range(steps):
            frames[step, :, :, 0] = 30 * step  # a flat colour per frame: the step is readable back
            frames[step, :, :, 1] = 60 * index
        episodes.append({"state": rng.normal(size=(steps, 3)).astype(np.float32),
                         "action": rng.normal(size=(steps, 2)).astype(np.float32),
                         "frames": frames, "task": f"task {index % 2}"})
    return episodes


def test_a_v21_dataset_reads_with_one_parquet_and_one_mp4_per_episode(tmp_path):
    written = v21_episodes()
    root = write_v21(tmp_path / "v21", written)
    mapping = {"cameras": {"base_0": "observation.images.top"}, "state": ["observation.state"],
               "action": ["action[:1]", "action[1:2]|pm1_close_to_open"]}
    source, episodes, report = read_all(root, mapping)
    assert source.meta.version == "v2.1" and source.fps == 10.0 and report.quarantined.as_dict() == {}
    for episode, truth in zip(episodes, written, strict=True):
        np.testing.assert_array_equal(episode.state, truth["state"])
        np.testing.assert_array_equal(episode.actions[:, 0], truth["action"][:, 0])
        np.testing.assert_allclose(episode.actions[:, 1], (1.0 - truth["action"][:, 1]) / 2.0, rtol=1e-6)
        assert episode.instructions == (truth["task"],)
        frames = episode.images["base_0"].array().astype(int)
        assert np.abs(frames - truth["frames"]).mean() < 3


def test_cameras_stored_as_images_are_read_from_the_parquet_exactly(tmp_path, monkeypatch):
    written = v21_episodes()
    root = write_v21(tmp_path / "v21", written, as_images=True)
    _, episodes, report = read_all(root, {"cameras": {"base_0": "observation.images.top"}})
    assert report.quarantined.as_dict() == {} and len(episodes) == 3
    for episode, truth in zip(episodes, written):
        np.testing.assert_array_equal(episode.images["base_0"].array(), truth["frames"])  # PNG: lossless
    _, episodes, _ = read_all(root, {"cameras": {"base_0": "observation.images.top"}}, images=False)
    assert all(not e.images for e in episodes)


def test_a_v21_video_shorter_than_its_parquet_is_quarantined(tmp_path):
    root = write_v21(tmp_path / "v21", v21_episodes(), short_video=1)
    _, episodes, report = read_all(root, {"cameras": {"base_0": "observation.images.top"}})
    assert report.quarantined.as_dict() == {"video_frame_count": 1} and len(episodes) == 2


# ------------------------------------------------------------------------------------ builds
@pytest.mark.slow
def test_builds_of_a_lerobot_source_are_identical_for_one_and_two_workers_and_ray(fixture_root, tmp_path):
    from support.builds import tree_bytes
    from support.recipes import lerobot_recipe

    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe

    recipe = load_recipe(lerobot_recipe(tmp_path / "recipe.toml", fixture_root))
    manifest = build(recipe, str(tmp_path / "one"), progress=False)
    assert manifest.sources[0].episodes == 25
    build(recipe, str(tmp_path / "two"), workers=2, progress=False)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    openpi = json.loads((tmp_path / "one" / "norm_stats" / "bridge" / "norm_stats.json").read_text())
    assert sorted(openpi["norm_stats"]) == ["actions", "state"]
    pytest.importorskip("ray", reason="the ray engine needs the 'ray' extra")
    import ray

    try:
        build(recipe, str(tmp_path / "ray"), engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "one")


# --------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixture_root):
    """The fixture read by kidata and written back by `export_lerobot`."""
    from kidata.pipelines.export_lerobot import export_lerobot

    _, episodes, _ = read_all(fixture_root)
    out = tmp_path_factory.mktemp("export") / "bridge"
    export_lerobot(episodes, out, robot_type="widowx")
    return episodes, out


def test_the_export_has_lerobots_info_keys_and_schemas(exported, fixture_root):
    _, out = exported
    ours, theirs = (json.loads((r / "meta" / "info.json").read_text()) for r in (out, fixture_root))
    assert sorted(ours) == sorted(theirs)
    assert {k: ours[k] for k in ("codebase_version", "fps", "total_episodes", "total_frames", "total_tasks",
                                 "chunks_size", "data_path", "video_path", "splits")} == \
           {k: theirs[k] for k in ("codebase_version", "fps", "total_episodes", "total_frames", "total_tasks",
                                   "chunks_size", "data_path", "video_path", "splits")}
    theirs_video = theirs["features"]["observation.images.image_0"]
    ours_video = ours["features"]["observation.images.base_0"]
    assert ours_video == theirs_video
    for key in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert {k: v for k, v in ours["features"][key].items() if k != "names"} == \
               {k: v for k, v in theirs["features"][key].items() if k != "names"}
    data = "data/chunk-000/file-000.parquet"
    assert pq.read_schema(out / data).remove_metadata() == pq.read_schema(fixture_root / data).remove_metadata()
    rename = lambda name: name.replace("image_0", "base_0").replace("image_1", "base_1")  # noqa: E731
    episodes_file = "meta/episodes/chunk-000/file-000.parquet"
    assert pq.read_schema(out / episodes_file).names == [rename(n) for n in pq.read_schema(fixture_root / episodes_file).names]
    assert pq.read_schema(out / "meta/tasks.parquet").names == pq.read_schema(fixture_root / "meta/tasks.parquet").names
    ours_rows, theirs_rows = (pq.read_table(r / episodes_file, columns=["dataset_from_index", "dataset_to_index", "length"])
                              .to_pylist() for r in (out, fixture_root))
    assert ours_rows == theirs_rows
    assert sorted(json.loads((out / "meta" / "stats.json").read_text())) == \
           sorted(rename(k) for k in json.loads((fixture_root / "meta" / "stats.json").read_text()))


def test_the_export_reads_back_to_the_same_episodes(exported):
    episodes, out = exported
    mapping = {"cameras": {"base_0": "observation.images.base_0", "base_1": "observation.images.base_1"}}
    _, back, report = read_all(out, mapping)
    assert report.quarantined.as_dict() == {} and not report.notices and len(back) == len(episodes)
    for original, again in zip(episodes, back):
        np.testing.assert_array_equal(again.state, original.state)
        np.testing.assert_array_equal(again.actions, original.actions)
        assert again.instructions == original.instructions and again.fps == original.fps
        for camera in ("base_0", "base_1"):
            difference = np.abs(again.images[camera].array().astype(int) - original.images[camera].array())
            assert difference.mean() < 4  # a second AV1 generation at crf 30


def test_export_statistics_equal_lerobots_own_on_the_same_values(exported, fixture_root):
    _, out = exported
    ours, theirs = (json.loads((r / "meta" / "stats.json").read_text()) for r in (out, fixture_root))
    for key in ("observation.state", "action", "frame_index", "episode_index", "index", "task_index"):
        for stat in ("min", "max", "mean", "count"):
            np.testing.assert_allclose(ours[key][stat], theirs[key][stat], rtol=1e-5, atol=1e-7, err_msg=f"{key} {stat}")
        np.testing.assert_allclose(ours[key]["std"], theirs[key]["std"], rtol=1e-4, atol=1e-7, err_msg=f"{key} std")


# ------------------------------------------------------------------------------- stats formats
def openpi_norm_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """What openpi.shared.normalize.load reads: {"norm_stats": {key: {mean, std, q01?, q99?}}}."""
    data = json.loads(path.read_text())["norm_stats"]
    return {key: {field: np.asarray(value[field]) for field in ("mean", "std", "q01", "q99") if field in value}
            for key, value in data.items()}


def lerobot_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """What lerobot's load_stats reads from meta/stats.json: per feature, arrays per statistic."""
    return {key: {stat: np.asarray(value) for stat, value in stats.items()}
            for key, stats in json.loads(path.read_text()).items()}


@pytest.fixture(scope="module")
def fixture_stats(fixture_root):
    from kidata.pipelines.stats import source_stats

    source = open_source("lerobot", path=str(fixture_root), mapping={"cameras": {}})
    return source_stats(source, progress=False)[0].finalize()


def test_openpi_norm_stats_hold_kidatas_statistics(fixture_stats, tmp_path):
    from kidata.stats_formats import render

    (tmp_path / "norm_stats.json").write_text(render(fixture_stats, "openpi"))
    loaded = openpi_norm_stats(tmp_path / "norm_stats.json")
    assert sorted(loaded) == ["actions", "state"]
    for key, part in (("state", fixture_stats.state), ("actions", fixture_stats.actions)):
        assert sorted(loaded[key]) == ["mean", "q01", "q99", "std"]
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(loaded[key][field], getattr(part, field))


def test_lerobot_stats_match_the_ones_lerobot_wrote_for_the_same_data(fixture_stats, fixture_root, tmp_path):
    from kidata.stats_formats import render

    (tmp_path / "stats.json").write_text(render(fixture_stats, "lerobot"))
    ours, theirs = lerobot_stats(tmp_path / "stats.json"), lerobot_stats(fixture_root / "meta" / "stats.json")
    for key in ("observation.state", "action"):
        assert sorted(ours[key]) == sorted(theirs[key])  # min max mean std count q01 q10 q50 q90 q99
        for stat in ("min", "max", "mean", "count"):
            np.testing.assert_allclose(ours[key][stat], theirs[key][stat], rtol=1e-5, atol=1e-7, err_msg=f"{key} {stat}")
        np.testing.assert_allclose(ours[key]["std"], theirs[key]["std"], rtol=1e-3, atol=1e-7)
        assert (ours[key]["min"] <= ours[key]["q01"]).all() and (ours[key]["q99"] <= ours[key]["max"]).all()
        assert (np.diff(np.stack([ours[key][q] for q in ("q01", "q10", "q50", "q90", "q99")]), axis=0) >= 0).all()


def test_statistics_written_before_the_middle_quantiles_are_refused_for_lerobot(fixture_stats):
    from dataclasses import replace

    from kidata.normalize import NormStats
    from kidata.stats_formats import render

    old = NormStats(replace(fixture_stats.state, q10=None, q50=None, q90=None), fixture_stats.actions)
    with pytest.raises(ValueError, match=r"lack \['q10', 'q50', 'q90'\].*recompute them"):
        render(old, "lerobot")
    assert "q10" not in json.loads(render(old, "kidata"))["state"]


def test_kidata_stats_writes_each_format(fixture_root, tmp_path, capsys):
    from kidata.cli import main

    for format in ("kidata", "openpi", "lerobot"):
        assert main(["stats", "--reader", "lerobot", "--path", str(fixture_root), "--format", format,
                     "--out", str(tmp_path / f"{format}.json"), "--quiet"]) == 0
    assert openpi_norm_stats(tmp_path / "openpi.json")["actions"]["mean"].shape == (7,)
    assert lerobot_stats(tmp_path / "lerobot.json")["action"]["count"].tolist() == [250]
    assert json.loads((tmp_path / "kidata.json").read_text())["episodes"] == 25


@pytest.mark.slow
def test_export_lerobot_command_writes_a_dataset_kidata_reads_back(tmp_path, capsys):
    from kidata.cli import main

    assert main(["export", "lerobot", "--recipe", "demo", "--source", "metaworld", "--out", str(tmp_path / "mw"),
                 "--max-episodes", "2"]) == 0
    mapping = {"cameras": {"base_0": "observation.images.base_0", "left_wrist_0": "observation.images.left_wrist_0"}}
    _, episodes, report = read_all(tmp_path / "mw", mapping)
    assert len(episodes) == 2 and report.quarantined.as_dict() == {} and episodes[0].fps == 80.0
    assert main(["export", "lerobot", "--recipe", "demo", "--source", "metaworld", "--out", str(tmp_path / "mw")]) != 0
    assert "already holds a LeRobot dataset; choose a new --out folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ refusals, 2
def test_an_export_of_no_episodes_or_of_mixed_episodes_is_refused_in_one_sentence(tmp_path):
    from kidata.pipelines.export_lerobot import export_lerobot
    from kidata.schema import Episode

    def episode(fps: float, dims: int) -> Episode:
        values = np.zeros((5, dims), np.float32)
        return Episode(episode_id=f"e{fps}{dims}", source="s", state=values, actions=values, instructions=("t",), fps=fps)

    with pytest.raises(ValueError, match="no episodes to export"):
        export_lerobot(iter([]), tmp_path / "none")
    with pytest.raises(ValueError, match=r"episode 1 \(e10.03\): fps 10.0, state 3, action 3 differ from the first "
                                         r"episode's \(5.0, 7, 7\)"):
        export_lerobot([episode(5.0, 7), episode(10.0, 3)], tmp_path / "mixed")
    with pytest.raises(ValueError, match="codec 'vp9': choose one of"):
        export_lerobot([episode(5.0, 7)], tmp_path / "codec", codec="vp9")


def test_kidata_stats_on_a_lerobot_source_needs_a_folder_or_a_repo():
    from kidata.cli import main

    with pytest.raises(SystemExit, match="give --path FOLDER or --repo-id ORG/NAME"):
        main(["stats", "--reader", "lerobot"])


def test_a_video_whose_header_declares_frames_past_the_limit_is_refused_before_decoding(fixture_root, monkeypatch):
    from kidata.sources import video

    path = str(fixture_root / "videos" / "observation.images.image_0" / "chunk-000" / "file-000.mp4")
    assert video.VideoFrames(path, np.array([0.0])).frame(0).ndim == 3
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 100)
    with pytest.raises(video.VideoError, match=r"file-000.mp4: the stream declares \d+x\d+ frames; kidata decodes frames "
                                               r"of 1 to 100 pixels"):
        video.VideoFrames(path, np.array([0.0])).frame(0)
