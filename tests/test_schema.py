"""Episode contract, action chunks and delta actions."""

from __future__ import annotations

import numpy as np
import pytest

from kidata.schema import Episode, EpisodeError, Frames, LanguageAnnotation, episode_defect


def make_episode(steps: int = 5, **overrides) -> Episode:
    fields = dict(
        episode_id="ep-1",
        source="bridge",
        state=np.arange(steps * 3, dtype=np.float32).reshape(steps, 3),
        actions=np.arange(steps * 3, dtype=np.float32).reshape(steps, 3) * 10,
        instructions=("open the drawer",),
        fps=5.0,
    )
    fields.update(overrides)
    return Episode(**fields)


def test_shape_errors_name_source_episode_and_field():
    with pytest.raises(EpisodeError, match=r"source 'bridge', episode 'ep-1': state must be a float32"):
        make_episode(state=np.zeros((5, 3), dtype=np.float64))
    with pytest.raises(EpisodeError, match="state has 4 steps, actions 5"):
        make_episode(state=np.zeros((4, 3), dtype=np.float32))
    frames = Frames(np.zeros((3, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(EpisodeError, match="camera 'base_0' has 3 frames for 5 steps"):
        make_episode(images={"base_0": frames})
    with pytest.raises(EpisodeError, match="camera 'front' is not one of"):
        make_episode(images={"front": Frames(np.zeros((5, 8, 8, 3), dtype=np.uint8))})


def test_chunk_pads_past_the_end_with_the_last_action_marked_invalid():
    episode = make_episode()
    chunk, valid = episode.action_chunk(3, 4)
    np.testing.assert_array_equal(chunk, episode.actions[[3, 4, 4, 4]])
    np.testing.assert_array_equal(valid, [True, True, False, False])


def test_delta_mask_makes_chosen_dimensions_relative_to_the_current_state():
    episode = make_episode()
    chunk, _ = episode.action_chunk(1, 2, delta_mask=np.array([True, True, False]))
    expected = episode.actions[[1, 2]].copy()
    expected[:, :2] -= episode.state[1, :2]
    np.testing.assert_array_equal(chunk, expected)


def test_annotations_cover_their_steps():
    episode = make_episode(annotations=(LanguageAnnotation(0, 2, "reach the handle"), LanguageAnnotation(2, 5, "pull")))
    assert [episode.annotation_at(s) for s in range(5)] == ["reach the handle"] * 2 + ["pull"] * 3
    with pytest.raises(EpisodeError, match="outside"):
        make_episode(annotations=(LanguageAnnotation(3, 9, "too long"),))


def test_defects_are_reported_by_reason():
    ok = np.zeros((4, 2), dtype=np.float32)
    bad = ok.copy()
    bad[1, 1] = np.inf
    assert episode_defect(ok, ok) is None
    assert episode_defect(ok[:1], ok[:1]) == "too_short"
    assert episode_defect(ok, bad) == "nonfinite_actions"
    assert episode_defect(bad, ok) == "nonfinite_state"


def test_rotated_frames_are_turned_180_degrees():
    frames = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    np.testing.assert_array_equal(Frames(frames, rotate_180=True).frame(0), frames[0][::-1, ::-1])
