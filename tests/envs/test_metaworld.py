"""Meta-World: expert rollouts as a kidata source, scene questions, RLDS export round trip, and the
closed-loop evaluator bounded by the scripted expert and random actions."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
metaworld = pytest.importorskip("metaworld", reason="Meta-World needs the 'sim' extra")

from support.recipes import RecipeDraft, source  # noqa: E402

from kidata.envs.metaworld import TASKS, from_env_action, instruction, resolve_tasks, to_env_action  # noqa: E402
from kidata.eval.chunking import Chunking  # noqa: E402
from kidata.eval.metaworld import ExpertPolicy, RandomPolicy, evaluate_metaworld  # noqa: E402
from kidata.sources.base import ReadReport  # noqa: E402
from kidata.sources.metaworld import MetaWorldSceneSource, MetaWorldSource  # noqa: E402


@pytest.fixture(scope="module")
def episodes():
    source = MetaWorldSource(["reach", "push"], episodes_per_task=2, image_size=64)
    report = ReadReport()
    return source, list(source.episodes(report=report)), report


def test_instructions_cover_all_fifty_tasks_of_the_installed_benchmark():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    names = sorted(ALL_V3_ENVIRONMENTS)
    assert len(names) == 50 and len(TASKS) == 50
    texts = [instruction(name) for name in names]
    assert all(texts) and len(set(texts)) == 50
    assert instruction("pick-place-v3") == "pick up the puck and place it at the goal"
    assert resolve_tasks("MT10")[:2] == ["reach-v3", "push-v3"] and len(resolve_tasks(["MT50"])) == 50
    with pytest.raises(KeyError, match="unknown Meta-World task"):
        resolve_tasks(["pick-plaice"])


@pytest.mark.parametrize("tasks", [[1], [["reach"]], {"reach": 1}, 3, "", []])
def test_tasks_that_are_not_a_benchmark_or_task_names_are_refused_in_one_sentence(tasks):
    with pytest.raises(ValueError, match=rf"^tasks = {re.escape(repr(tasks))}: expected a benchmark name \(MT10, MT50\) "
                                         r"or a list of task names, e\.g\. \[\"reach\", \"push\"\]$"):
        resolve_tasks(tasks)


@pytest.mark.parametrize("cameras", [3, ["corner"], {"base_0": 3}])
def test_metaworld_cameras_that_are_not_a_table_of_camera_names_are_refused_naming_the_source(cameras):
    with pytest.raises(ValueError, match=r"^metaworld source 'arm': cameras = .*: expected a table of standard camera = "
                                         r"Meta-World camera"):
        MetaWorldSource(["reach"], cameras=cameras, name="arm")


def test_a_failure_inside_the_scene_process_is_one_line_with_its_traceback_kept_as_the_cause():
    from kidata.envs.metaworld import Scene

    scene = Scene("reach-v3", seed=0, image_size=16)
    try:
        with pytest.raises(RuntimeError) as raised:
            scene.render("nope")
    finally:
        scene.close()
    assert str(raised.value) == "Meta-World scene 'reach-v3' (render): ValueError: The camera \"nope\" does not exist."
    assert "Traceback (most recent call last)" in str(raised.value.__cause__)


def test_gripper_convention_round_trips():
    env_action = np.array([0.2, -0.3, 0.5, 1.0])  # Meta-World: +1 = close
    standard = from_env_action(env_action)
    assert standard[3] == 0.0  # kidata: 0 = closed
    np.testing.assert_allclose(to_env_action(standard), env_action)


def test_expert_rollouts_are_standard_successful_episodes(episodes):
    _, items, report = episodes
    assert [e.episode_id for e in items] == ["reach-v3-s0-e00000", "reach-v3-s0-e00001",
                                            "push-v3-s0-e00000", "push-v3-s0-e00001"]
    assert not report.quarantined
    for episode in items:
        assert episode.state.shape == (episode.steps, 4) and episode.actions.shape == (episode.steps, 4)
        assert episode.fps == 80.0 and episode.metadata["success"]
        assert episode.steps == episode.metadata["steps_to_success"] + 5  # settles 5 steps after success
        assert set(episode.images) == {"base_0", "left_wrist_0"}
        assert episode.images["base_0"].frame(0).shape == (64, 64, 3)
        assert ((episode.actions[:, 3] >= 0) & (episode.actions[:, 3] <= 1)).all()
    assert items[0].instructions == ("reach the goal",) and items[2].instructions == ("push the puck to the goal",)


def test_rollouts_without_rendering_are_the_same_rollouts(episodes):
    source, items, _ = episodes
    again = list(source.episodes(images=False))
    for a, b in zip(items, again):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.state, b.state)
    assert again[0].images == {}


def test_noisy_rollouts_leave_the_expert_path_and_record_the_experts_clean_action_there():
    from kidata.envs.metaworld import Scene, expert

    clean = MetaWorldSource(["push"], episodes_per_task=1)
    noisy = MetaWorldSource(["push"], episodes_per_task=1, action_noise=0.3)
    scene = Scene("push-v3", seed=0, image_size=32)
    try:
        knocked_off = noisy.rollout(scene, 0, images=False)  # the noise made the expert fail this one
        path = clean.rollout(scene, 1, images=False)
        off_path = noisy.rollout(scene, 1, images=False, env_observations=True)
        again = noisy.rollout(scene, 1, images=False)
    finally:
        scene.close()
    assert knocked_off is None
    steps = min(path.steps, off_path.steps)
    assert np.abs(off_path.state[:steps, :3] - path.state[:steps, :3]).max() > 0.005  # > 5 mm off the path
    policy = expert("push-v3")
    relabelled = np.stack([from_env_action(np.clip(policy.get_action(o), -1.0, 1.0)) for o in off_path.metadata["env_obs"]])
    np.testing.assert_array_equal(off_path.actions, relabelled.astype(np.float32))
    np.testing.assert_array_equal(again.actions, off_path.actions)  # drawn from (seed, task, episode)
    with pytest.raises(ValueError, match="action_noise must be a standard deviation >= 0, got -0.1"):
        MetaWorldSource(["push"], action_noise=-0.1)


def test_scene_questions_are_answered_from_simulator_state():
    source = MetaWorldSceneSource(["push"], scenes_per_task=2, image_size=64, pointing=True)
    examples = list(source.examples())
    kinds = [e.example_id.rsplit("-", 1)[1] for e in examples]
    assert kinds[:4] == ["task", "gripper", "side", "point"]
    by_kind = {kind: e for kind, e in zip(kinds, examples)}
    assert by_kind["task"].targets == ("push the puck to the goal",)
    assert by_kind["gripper"].targets[0] in ("open", "closed")
    assert by_kind["side"].prompt == "is the puck left or right of the gripper?"
    assert by_kind["side"].targets[0] in ("left", "right")
    point = by_kind["point"].points[0]
    assert ((point >= 0) & (point <= 1)).all()
    hand, thing = by_kind["side"].metadata["hand_yx"], by_kind["side"].metadata["object_yx"]
    np.testing.assert_allclose(point, thing, rtol=1e-6)
    assert by_kind["side"].targets[0] == ("left" if thing[1] < hand[1] else "right")


def test_scene_questions_point_at_the_rendered_goal_marker_in_tasks_that_have_one():
    """reach's red goal ball, drawn 3x larger, is where "goal" points and what left/right is about;
    button-press-topdown has no goal marker and gets no goal question."""
    source = MetaWorldSceneSource(["reach", "button-press-topdown"], scenes_per_task=1, image_size=96,
                                  pointing=True, goal_marker_scale=3.0)
    examples = {e.example_id: e for e in source.examples()}
    reach, button = "reach-v3-s0-q00000", "button-press-topdown-v3-s0-q00000"
    side, point = examples[f"{reach}-goalside"], examples[f"{reach}-goalpoint"]
    goal, hand = point.metadata["goal_yx"], point.metadata["hand_yx"]
    np.testing.assert_allclose(point.points[0], goal, rtol=1e-6)
    assert point.prompt == "goal" and side.prompt == "is the goal left or right of the gripper?"
    assert side.targets == ("left" if goal[1] < hand[1] else "right",)
    row, column = int(goal[0] * 96), int(goal[1] * 96)
    patch = np.asarray(point.image).astype(int)[row - 1 : row + 2, column - 1 : column + 2].reshape(-1, 3)
    red = (patch[:, 0] > 120) & (patch[:, 1] < 60) & (patch[:, 2] < 60)
    assert red.sum() >= 5, patch
    assert not any(key.startswith(button) and "goal" in key.rsplit("-", 1)[1] for key in examples)


def test_projection_lands_on_the_rendered_gripper():
    """The hand's projected pixel in the upright corner view is where the (white-fingered) gripper is."""
    from kidata.envs.metaworld import Scene

    scene = Scene("reach-v3", seed=0, image_size=96)
    try:
        observation = scene.reset(0)
        y, x = scene.project(observation[:3], "corner")
        image = scene.render("corner").astype(int)
    finally:
        scene.close()
    row, column = int(y * 96), int(x * 96)
    window = image[max(0, row - 6): row + 7, max(0, column - 6): column + 7]
    bright = (window.min(axis=2) > 170).sum()  # the fingers are the brightest pixels near the hand
    assert bright >= 2


@pytest.mark.slow
def test_two_task_two_episode_build_decodes_back_to_the_rollouts(tmp_path, episodes):
    from kidata.normalize import NormStats, normalize
    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe
    from kidata.pipelines.shards import iter_shard, load_npy
    from kidata.pipelines.verify import verify

    _, items, _ = episodes
    RecipeDraft({"name": "mw", "action_horizon": 4, "image_size": 64, "max_tokens": 128, "units_per_source": 2,
                 "fast_tokenizer": {"fit": True, "vocab_size": 300, "scale": 10.0}},
                (source("metaworld", "metaworld", tasks=["reach", "push"], episodes_per_task=2),
                 source("scenes", "metaworld_scenes", tasks=["reach"], scenes_per_task=2, weight=0.2))
                ).write(tmp_path / "recipe.toml")
    manifest = build(load_recipe(tmp_path / "recipe.toml"), str(tmp_path / "out"), progress=False)
    robot, scenes = manifest.sources
    assert (robot.episodes, robot.samples) == (4, sum(e.steps for e in items))
    assert scenes.samples >= 4
    assert verify(str(tmp_path / "out")) == []
    stats = NormStats.from_json(robot.norm_stats)
    samples = {key: members for shard in robot.shards
               for key, members in iter_shard((tmp_path / "out" / shard.path).read_bytes())}
    for episode in items:
        actions = normalize(episode.actions, stats.actions).astype(np.float32)
        for step in (0, episode.steps - 1):
            members = samples[f"{episode.episode_id}_{step:06d}"]
            index = np.minimum(np.arange(step, step + 4), episode.steps - 1)
            np.testing.assert_array_equal(load_npy(members["actions.npy"]), actions[index])
            assert json.loads(members["meta.json"])["instruction"] == episode.instructions[0]


def test_export_to_rlds_reads_back_identically(tmp_path, episodes):
    pytest.importorskip("tensorflow_datasets")
    from kidata.pipelines.export import MAPPING_FILE, export_rlds
    from kidata.sources.rlds import RldsSource
    from kidata.sources.spec import spec_from_mapping

    _, items, _ = episodes
    directory = export_rlds(items[:2], tmp_path, name="metaworld_export")
    mapping = json.loads((directory / MAPPING_FILE).read_text())
    back = list(RldsSource(str(directory), spec_from_mapping("metaworld_export", mapping)).episodes())
    assert len(back) == 2
    for original, read in zip(items[:2], back):
        np.testing.assert_array_equal(read.state, original.state)
        np.testing.assert_array_equal(read.actions, original.actions)
        assert read.instructions == original.instructions and read.fps == original.fps
        for camera in ("base_0", "left_wrist_0"):
            for step in (0, original.steps - 1):
                np.testing.assert_array_equal(read.images[camera].frame(step), original.images[camera].frame(step))


def test_the_evaluator_is_bounded_by_the_expert_and_random_actions(tmp_path):
    expert = evaluate_metaworld(ExpertPolicy(), ["reach", "push"], episodes=2, chunking=Chunking(replan=1), max_steps=200,
                                out=tmp_path)
    assert expert["success_rate"] == {"reach-v3": 1.0, "push-v3": 1.0} and expert["mean_success_rate"] == 1.0
    assert (tmp_path / "reach-v3-episode0.png").exists() and (tmp_path / "metaworld_eval.json").exists()
    random = evaluate_metaworld(RandomPolicy(seed=0), ["reach", "push"], episodes=2, max_steps=100)
    assert random["mean_success_rate"] == 0.0
