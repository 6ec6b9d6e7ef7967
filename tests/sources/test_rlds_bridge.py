"""The real 25 + 25 episode Bridge dataset in ../shared, read through the registry."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="RLDS tests need the 'rlds' extra")

from support.data import shared_path  # noqa: E402

from kidata.sources.base import ReadReport  # noqa: E402
from kidata.sources.registry import lookup  # noqa: E402
from kidata.sources.rlds import RldsSource  # noqa: E402


@pytest.fixture(scope="module")
def bridge_path() -> str:
    return str(shared_path("data", "rlds", "bridge_dataset", "1.0.0"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_episode_reads_with_standard_shapes(bridge_path, split):
    source = RldsSource(bridge_path, lookup("bridge_dataset"), split=split)
    report = ReadReport()
    episodes = list(source.episodes(report=report))
    assert len(episodes) == source.num_episodes() == 25
    assert report.quarantined.as_dict() == {}
    for episode in episodes:
        assert episode.state.shape[1] == 7 and episode.actions.shape[1] == 7
        assert episode.state.dtype == np.float32 and len(episode.state) == len(episode.actions) >= 2
        assert episode.instructions and all(text.strip() for text in episode.instructions)
        assert episode.fps == 5
        # image_0 and image_1 hold real frames; image_3 is black padding: absent, not black
        assert sorted(episode.images) == ["base_0", "base_1"]
        assert episode.images["base_0"].frame(0).shape == (64, 64, 3)
        assert 0.0 <= episode.actions[:, 6].min() and episode.actions[:, 6].max() <= 1.0  # 1 = open


def test_work_units_are_disjoint_and_cover_every_episode_once(bridge_path):
    source = RldsSource(bridge_path, lookup("bridge_dataset"))
    everything = [e.metadata["file_path"] + str(e.metadata["episode_id"]) for e in source.episodes(images=False)]
    for count in (1, 3, 4, 25, 40):
        units = source.list_units(count)
        assert len(units) == min(count, 25)
        per_unit = [[e.metadata["file_path"] + str(e.metadata["episode_id"]) for e in source.read(u, images=False)]
                    for u in units]
        assert [x for unit in per_unit for x in unit] == everything
        assert sum(map(len, per_unit)) == 25


def test_stats_from_two_worker_processes_equal_one_pass(bridge_path, tmp_path, capsys):
    from kidata.cli import main
    from kidata.pipelines.stats import EpisodeStats, source_stats

    source = RldsSource(bridge_path, lookup("bridge_dataset"))
    serial = EpisodeStats()
    for episode in source.episodes(images=False):
        serial.add(episode.state, episode.actions)
    parallel, report = source_stats(source, workers=2, progress=False)
    assert parallel.finalize() == serial.finalize() and parallel.episodes == 25

    out = tmp_path / "stats.json"
    assert main(["stats", "--reader", "rlds", "--path", bridge_path, "--dataset", "bridge_dataset",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "actions (250 steps, 7 dims)" in printed
    import json

    saved = json.loads(out.read_text())
    assert saved["episodes"] == 25 and saved["actions"] == serial.finalize().actions.to_json()


def test_feature_keys_from_plain_json_equal_tensorflows(bridge_path):
    from kidata.sources.rlds import _flat_keys, _json_flat_keys

    source = RldsSource(bridge_path, lookup("bridge_dataset"))
    _, features = source._metadata_json()
    tf_features = source.builder.info.features
    steps = sorted(_json_flat_keys(features["steps"]["sequence"]["feature"]))
    assert steps == sorted(_flat_keys(tf_features["steps"].feature)) and "observation/image_0" in steps
    assert sorted(_json_flat_keys(features["episode_metadata"])) == sorted(_flat_keys(tf_features["episode_metadata"]))


def test_listing_units_and_checking_keys_do_not_import_tensorflow(bridge_path):
    """A multi-worker build's coordinator only lists units: TensorFlow stays in the workers."""
    import subprocess
    import sys

    script = ("import sys; from kidata.sources.registry import lookup; from kidata.sources.rlds import RldsSource; "
              f"units = RldsSource({bridge_path!r}, lookup('bridge_dataset'), split='val').list_units(4); "
              "print(len(units), sum(u.stop - u.start for u in units), 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["4", "25", "False"]


def test_unit_records_cover_every_episode_once_without_tf_data_autotuning(bridge_path):
    # autotuning made pool workers stall for seconds at a unit's end (see record_datasets)
    source = RldsSource(bridge_path, lookup("bridge_dataset"))
    units = source.list_units(3)
    datasets = [dataset for unit in units for dataset in source.record_datasets(unit)]
    assert all(dataset.options().autotune.enabled is False for dataset in datasets)
    records = [record.numpy() for dataset in datasets for record in dataset]
    assert len(records) == len(set(records)) == source.num_episodes() == 25


def test_actions_and_gripper_are_the_raw_tfrecords_values_read_without_kidata(bridge_path):
    """The first train episode against its record parsed with plain TensorFlow protobufs: the
    expectation does not come from the reader under test. Bridge's gripper is already 1 = open."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset(f"{bridge_path}/bridge_dataset-train.tfrecord-00000-of-00001")
    episodes = {e.episode_id: e for e in RldsSource(bridge_path, lookup("bridge_dataset")).episodes(images=False)}
    checked_both = 0
    for index, raw in enumerate(records):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        actions = np.array(feature["steps/action"].float_list.value, dtype=np.float32).reshape(-1, 7)
        state = np.array(feature["steps/observation/state"].float_list.value, dtype=np.float32).reshape(-1, 7)
        episode = episodes[f"train-{index:06d}"]
        np.testing.assert_array_equal(episode.actions, actions)
        np.testing.assert_array_equal(episode.state, state)
        checked_both += set(np.unique(actions[:, 6])) == {0.0, 1.0}
    assert index == 24 and checked_both > 0  # episodes where the gripper closes and opens: an inversion would show
