"""LIBERO: the original HDF5 demos and their RLDS no_noops form give the same episodes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("h5py", reason="LIBERO HDF5 tests need h5py")

from support import rlds as fx  # noqa: E402

from kidata.sources.base import ReadReport  # noqa: E402
from kidata.sources.libero_hdf5 import LiberoHdf5Source, instruction_from_filename  # noqa: E402
from kidata.sources.spec import noop_mask  # noqa: E402

INSTRUCTION = "put the black bowl on the plate"
FILE_NAME = "KITCHEN_SCENE3_put_the_black_bowl_on_the_plate_demo.hdf5"


@pytest.fixture(scope="module")
def demos():
    return [fx.raw_libero_demo(0, 10), fx.raw_libero_demo(1, 12)]


@pytest.fixture(scope="module")
def hdf5_file(tmp_path_factory, demos):
    return fx.write_libero_hdf5(tmp_path_factory.mktemp("libero") / FILE_NAME, demos)


def test_noop_steps_are_still_arm_with_unchanged_gripper(demos):
    np.testing.assert_array_equal(noop_mask(demos[0]["actions"]), ~demos[0]["keep"])


def test_instruction_comes_from_the_file_name_without_scene_prefix():
    assert instruction_from_filename(FILE_NAME) == INSTRUCTION
    assert instruction_from_filename("LIVING_ROOM_SCENE2_pick_up_the_ketchup_demo.hdf5") == "pick up the ketchup"


def test_problem_info_attribute_wins_over_the_file_name(tmp_path, demos):
    path = fx.write_libero_hdf5(tmp_path / "anything_demo.hdf5", demos[:1],
                                problem_info={"language_instruction": "  open the top   drawer "})
    episode = next(LiberoHdf5Source(str(path)).episodes())
    assert episode.instructions == ("open the top drawer",)


def test_hdf5_and_rlds_forms_yield_the_same_episodes(tmp_path, hdf5_file, demos):
    pytest.importorskip("tensorflow_datasets", reason="needs the 'rlds' extra")
    from kidata.sources.registry import lookup
    from kidata.sources.rlds import RldsSource

    rlds_dir = fx.write_dataset(tmp_path, "libero_goal_no_noops", fx.libero_features(), {
        "train": [fx.libero_rlds_episode(d, INSTRUCTION, str(hdf5_file)) for d in demos]})
    from_rlds = list(RldsSource(str(rlds_dir), lookup("libero_goal_no_noops")).episodes())
    report = ReadReport()
    from_hdf5 = list(LiberoHdf5Source(str(hdf5_file)).episodes(report=report))
    assert report.notices["noop_steps_removed"] == 4
    assert len(from_rlds) == len(from_hdf5) == 2
    for a, b in zip(from_rlds, from_hdf5):
        assert a.steps == b.steps
        np.testing.assert_allclose(a.state, b.state, atol=1e-6)
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)
        assert set(np.unique(a.actions[:, 6])) == {0.0, 1.0}  # -1 open / +1 close -> 1 = open
        assert a.instructions == b.instructions == (INSTRUCTION,)
        assert a.fps == b.fps == 20
        assert sorted(a.images) == sorted(b.images) == ["base_0", "left_wrist_0"]
        for camera in a.images:
            np.testing.assert_array_equal(a.images[camera].array(), b.images[camera].array())


def test_work_units_split_demos_within_files(hdf5_file):
    source = LiberoHdf5Source(str(hdf5_file))
    units = source.list_units(2)
    assert [(u.start, u.stop) for u in units] == [(0, 1), (1, 2)]
    assert [e.episode_id for u in units for e in source.read(u)] == [
        f"{hdf5_file.stem}-demo_0", f"{hdf5_file.stem}-demo_1"]


def test_drop_noops_on_an_rlds_mapping_removes_the_steps_the_libero_release_removed(tmp_path, hdf5_file, demos):
    """The raw demos (no-ops kept) stored as RLDS and read through a user's mapping with
    ``drop_noops = true`` give the HDF5 reader's episodes: same steps, actions and frames."""
    pytest.importorskip("tensorflow_datasets", reason="needs the 'rlds' extra")
    from kidata.sources.rlds import RldsSource
    from kidata.sources.spec import spec_from_mapping

    with_noops = [{**demo, "keep": np.ones_like(demo["keep"])} for demo in demos]
    rlds_dir = fx.write_dataset(tmp_path, "libero_with_noops", fx.libero_features(), {
        "train": [fx.libero_rlds_episode(d, INSTRUCTION, str(hdf5_file)) for d in with_noops]})
    mapping = {"cameras": {"base_0": "image", "left_wrist_0": "wrist_image"}, "state": ["observation/state"],
               "action": ["action[:6]", "action[6:7]|pm1_close_to_open"], "fps": 20}
    kept = list(RldsSource(str(rlds_dir), spec_from_mapping("raw", mapping)).episodes())
    report = ReadReport()
    dropped = list(RldsSource(str(rlds_dir), spec_from_mapping("raw", {**mapping, "drop_noops": True})).episodes(
        report=report))
    from_hdf5 = list(LiberoHdf5Source(str(hdf5_file)).episodes())
    assert [e.steps for e in kept] == [10, 12]
    assert report.notices["noop_steps_removed"] == 4
    assert [e.steps for e in dropped] == [e.steps for e in from_hdf5] == [8, 10]
    for a, b in zip(dropped, from_hdf5):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)
        np.testing.assert_array_equal(a.images["base_0"].frame(a.steps - 1),  # the RLDS form is stored upright
                                      b.images["base_0"].frame(b.steps - 1))
