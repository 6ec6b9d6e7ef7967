"""Delta actions (``mapping.delta``): the build trains chosen action dimensions relative to the
state, its statistics, FAST sample and openpi export follow the relative values, and the policy adds
the observed state back. Real Bridge data and a DROID-layout dataset (joint positions + gripper)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.recipes import RecipeDraft, bridge, mixture_recipe, source

from kidata.delta import DeltaMaskError, check_delta_mask, to_absolute, to_delta
from kidata.normalize import NormStats, normalize
from kidata.pipelines.recipe import RecipeError, parse_recipe

BRIDGE_DELTA = [True, True, True, True, True, True, False]  # openpi's make_bool_mask(6, -1)
DROID_DELTA = [True] * 7 + [False]  # make_bool_mask(7, -1): joints relative, gripper absolute
HORIZON = 4


def test_delta_then_absolute_is_the_identity_and_leaves_unmasked_dimensions_alone():
    chunk = np.array([[1.0, 10.0, 100.0, 5.0], [2.0, 20.0, 200.0, 6.0]])  # [H=2, A=4]
    state = np.array([0.5, 4.0, 7.0])  # [S=3]
    mask = np.array([True, False, True])  # shorter than the actions: dimension 3 stays absolute
    relative = to_delta(chunk, state, mask)
    np.testing.assert_array_equal(relative, [[0.5, 10.0, 93.0, 5.0], [1.5, 20.0, 193.0, 6.0]])
    np.testing.assert_array_equal(to_absolute(relative, state, mask), chunk)


def test_a_mask_longer_than_the_actions_is_refused_naming_both_widths():
    with pytest.raises(DeltaMaskError, match=r"source 'arm': mapping.delta has 8 entries but the actions have 7 "
                                             r"dimensions \(state 9\)"):
        check_delta_mask([True] * 8, state_dim=9, action_dim=7, where="source 'arm'")


def test_a_mask_longer_than_the_state_is_refused_naming_both_widths():
    with pytest.raises(DeltaMaskError, match=r"source 'arm': mapping.delta has 7 entries but the state has 6 "
                                             r"dimensions \(actions 7\)"):
        check_delta_mask([True] * 7, state_dim=6, action_dim=7, where="source 'arm'")


def delta_recipe(*sources: dict, units: int = 1) -> RecipeDraft:
    """The test mixture at HORIZON-step chunks without a held-out split, over ``sources``."""
    return mixture_recipe(*sources, units=units, name="delta", action_horizon=HORIZON, holdout=None)


def arm(delta: list) -> dict:
    """A Bridge-registered RLDS source whose mapping holds only ``delta``."""
    return source("arm", "rlds", path="x", dataset="bridge_dataset", mapping={"delta": delta})


def test_a_delta_entry_that_is_not_booleans_is_refused_by_the_recipe():
    with pytest.raises(RecipeError, match=r"\(arm\) mapping: delta = \[1, 1, 0\]; write one true/false"):
        parse_recipe(delta_recipe(arm([1, 1, 0])).tables())


def test_a_registry_dataset_takes_a_mapping_that_holds_only_delta():
    source = parse_recipe(delta_recipe(arm([True, False])).tables()).sources[0]
    assert source.delta_mask == (True, False)
    assert "mapping" not in source.reader_options and source.options["mapping"] == {"delta": [True, False]}


# ------------------------------------------------------------------------------ real builds
pytest.importorskip("tensorflow_datasets", reason="the fixture builds read RLDS")

from support import rlds as fx  # noqa: E402
from support.data import shared_path  # noqa: E402

BRIDGE = shared_path("data", "rlds", "bridge_dataset", "1.0.0")


@pytest.fixture(scope="module")
def droid_dir(tmp_path_factory) -> Path:
    episodes = [fx.droid_episode(0, 5), fx.droid_episode(2, 6)]
    return fx.write_dataset(tmp_path_factory.mktemp("droid"), "droid_100", fx.droid_features(), {"train": episodes})


def delta_sources(droid_dir: Path, bridge_delta=BRIDGE_DELTA) -> tuple[dict, dict]:
    """Bridge (delta on its six arm dimensions) and the DROID-layout dataset (delta on its seven joints)."""
    return (bridge(mapping={"delta": bridge_delta}),
            source("droid", "rlds", path=str(droid_dir), dataset="droid_100", action_space="joint_position",
                   mapping={"delta": DROID_DELTA}))


@pytest.fixture(scope="module")
def built(droid_dir, tmp_path_factory):
    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe

    root = tmp_path_factory.mktemp("delta")
    delta_recipe(*delta_sources(droid_dir)).write(root / "recipe.toml")
    recipe = load_recipe(root / "recipe.toml")
    manifest = build(recipe, str(root / "out"), progress=False)
    return recipe, root / "out", manifest


def episodes(recipe, name: str) -> list:
    source = recipe.source(name)
    return list(recipe.open(source).episodes())


def relative_rows(episode, mask) -> np.ndarray:
    """Every valid position of every step's chunk minus that step's state on the masked dims, [N, A]."""
    rows = []
    for step in range(episode.steps):
        for ahead in range(HORIZON):
            if step + ahead < episode.steps:
                row = episode.actions[step + ahead].astype(np.float64)
                row[: len(mask)] -= np.where(mask, episode.state[step, : len(mask)], 0.0)
                rows.append(row)
    return np.array(rows)


def samples_of(out: Path, manifest, name: str) -> dict[str, dict]:
    from kidata.pipelines.shards import iter_shard

    found = {}
    for shard in manifest.source(name).shards:
        found.update(dict(iter_shard((out / shard.path).read_bytes())))
    return found


@pytest.mark.parametrize("name, mask", [("bridge", BRIDGE_DELTA), ("droid", DROID_DELTA)])
def test_action_statistics_are_those_of_the_relative_chunks(built, name, mask):
    recipe, _, manifest = built
    rows = np.concatenate([relative_rows(e, mask) for e in episodes(recipe, name)])
    stats = NormStats.from_json(manifest.source(name).norm_stats)
    assert stats.actions.count == len(rows)
    np.testing.assert_allclose(stats.actions.mean, rows.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.actions.min, rows.min(axis=0), rtol=1e-6)
    assert manifest.source(name).delta_mask == tuple(mask)


def test_droid_joint_deltas_are_the_joint_motion_over_the_chunk(built):
    # the fixture's joints move 0.1 per step and each command is 0.01 ahead of the joints
    recipe, _, manifest = built
    stats = NormStats.from_json(manifest.source("droid").norm_stats)
    assert stats.actions.min[:7] == pytest.approx([0.01] * 7, abs=1e-6)
    assert stats.actions.max[:7] == pytest.approx([0.31] * 7, abs=1e-6)


def test_samples_hold_the_normalized_relative_chunk_of_their_step(built):
    from kidata.pipelines.shards import load_npy

    recipe, out, manifest = built
    stats = NormStats.from_json(manifest.source("droid").norm_stats)
    samples = samples_of(out, manifest, "droid")
    for episode in episodes(recipe, "droid"):
        for step in range(episode.steps):
            index = np.minimum(np.arange(step, step + HORIZON), episode.steps - 1)
            expected = to_delta(episode.actions[index], episode.state[step], np.array(DROID_DELTA))
            stored = load_npy(samples[f"{episode.episode_id}_{step:06d}"]["actions.npy"])
            np.testing.assert_allclose(stored, normalize(expected, stats.actions), atol=1e-6)


def test_the_fast_fit_sample_holds_relative_chunks(built):
    from kidata.pipelines.stats_pass import stats_unit

    recipe, _, _ = built
    source = recipe.open(recipe.source("droid"))
    by_step = {(e.episode_id, s): to_delta(e.actions[np.minimum(np.arange(s, s + HORIZON), e.steps - 1)], e.state[s],
                                           np.array(DROID_DELTA))
               for e in source.episodes() for s in range(e.steps)}
    _, _, reservoir = stats_unit(recipe, "droid", source.list_units(1)[0])
    assert len(reservoir) == len(by_step)
    expected = sorted(by_step.values(), key=lambda chunk: chunk.tobytes())
    actual = sorted((chunk for _, chunk in reservoir), key=lambda chunk: chunk.tobytes())
    for left, right in zip(actual, expected):
        np.testing.assert_array_equal(left, right)


def test_the_openpi_norm_stats_export_holds_the_relative_statistics(built):
    _, out, manifest = built
    exported = json.loads((out / "norm_stats" / "droid" / "norm_stats.json").read_text())["norm_stats"]["actions"]
    recorded = manifest.source("droid").norm_stats["actions"]
    assert exported["mean"] == recorded["mean"] and exported["q99"] == recorded["q99"]
    # relative joint motion, not the joint angle: 0.01 + 0.1 * (mean steps ahead over the 32 valid
    # chunk positions of the 5- and 6-step episodes, 38 / 32)
    assert exported["mean"][0] == pytest.approx(0.01 + 0.1 * 38 / 32, abs=1e-6)


class ReplayOutput:
    """Stands in for the model's ``sample_actions``: returns whatever chunk the test recorded."""

    def __init__(self, action_dim: int) -> None:
        self.action_dim, self.chunk = action_dim, None

    def __call__(self, batch, num_steps, noise):
        import torch

        padded = np.zeros((1, HORIZON, self.action_dim), dtype=np.float32)
        padded[0, :, : self.chunk.shape[1]] = self.chunk
        return torch.from_numpy(padded)


def replay_policy(out: Path, manifest, source: str):
    """The run's policy, its model's action output replaced by a recorded normalized chunk [H, A]."""
    from kidata.model.ki_model import KIModel
    from kidata.policy import Policy
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.training.config import load

    config = load("ki_tiny", {"model": {"image_size": 64, "action_horizon": HORIZON},
                              "data": {"cameras": ["base_0"], "manifest": out / "manifest.json"}})
    model = KIModel(config.model)
    model.sample_actions = ReplayOutput(config.model.action_dim)
    encoder = SampleEncoder.from_manifest(manifest, out / "fast_tokenizer")
    return Policy(model, config, manifest, encoder, source=source), model.sample_actions


@pytest.mark.parametrize("name", ["bridge", "droid"])
def test_policy_returns_the_recorded_absolute_actions_when_the_model_outputs_the_recorded_deltas(built, name):
    from kidata.pipelines.shards import load_npy

    recipe, out, manifest = built
    samples = samples_of(out, manifest, name)
    policy, replay = replay_policy(out, manifest, name)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    for episode in episodes(recipe, name)[:2]:
        for step in (0, episode.steps - HORIZON):
            replay.chunk = load_npy(samples[f"{episode.episode_id}_{step:06d}"]["actions.npy"])  # normalized deltas
            actions = policy.sample_actions({"images": {"base_0": image}, "state": episode.state[step],
                                             "prompt": episode.instructions[0]})
            np.testing.assert_allclose(actions, episode.actions[step : step + HORIZON], atol=1e-5)


def test_a_delta_mask_wider_than_the_state_is_refused_naming_both(droid_dir, tmp_path):
    from kidata.pipelines.build import BuildError, build
    from kidata.pipelines.recipe import load_recipe

    delta_recipe(*delta_sources(droid_dir, bridge_delta=[True] * 8), units=2).write(tmp_path / "recipe.toml")
    with pytest.raises(BuildError, match=r"bridge:0, bridge:1: DeltaMaskError: source 'bridge': mapping.delta has 8 "
                                         r"entries but the actions have 7 dimensions \(state 7\)") as refused:
        build(load_recipe(tmp_path / "recipe.toml"), str(tmp_path / "out"), progress=False)
    assert str(refused.value).count("mapping.delta") == 1  # one sentence, however many units it stopped


def test_kidata_stats_with_delta_writes_the_builds_relative_statistics_as_openpi_norm_stats(built, tmp_path):
    from kidata.cli import main

    _, _, manifest = built
    out = tmp_path / "norm_stats.json"
    assert main(["stats", "--reader", "rlds", "--path", str(BRIDGE), "--dataset", "bridge_dataset", "--delta",
                 json.dumps(BRIDGE_DELTA), "--action-horizon", str(HORIZON), "--format", "openpi", "--out", str(out),
                 "--quiet"]) == 0
    written = json.loads(out.read_text())["norm_stats"]["actions"]
    recorded = manifest.source("bridge").norm_stats["actions"]
    np.testing.assert_allclose(written["mean"], recorded["mean"], rtol=1e-9, atol=1e-12)
    assert written["q01"] == recorded["q01"] and written["q99"] == recorded["q99"]


def test_kidata_stats_with_delta_needs_the_chunk_length():
    from kidata.cli import main

    with pytest.raises(SystemExit, match=r"kidata stats --delta: give --action-horizon H"):
        main(["stats", "--reader", "rlds", "--path", str(BRIDGE), "--dataset", "bridge_dataset", "--delta", "[true]"])


def test_a_lerobot_mapping_takes_delta_beside_its_keys_and_gives_the_same_statistics_as_rlds(built):
    pytest.importorskip("av", reason="the LeRobot reader needs the 'lerobot' extra")
    from kidata.pipelines.stats_pass import stats_unit

    _, _, manifest = built
    mapping = {"cameras": {"base_0": "observation.images.image_0"}, "state": ["observation.state"], "action": ["action"],
               "delta": BRIDGE_DELTA}
    recipe = parse_recipe({"mixture": {"name": "m", "action_horizon": HORIZON},
                           "sources": [{"name": "bridge", "reader": "lerobot", "mapping": mapping,
                                        "path": str(shared_path("data", "lerobot", "bridge_v3"))}]})
    unit = recipe.open(recipe.sources[0]).list_units(1)[0]  # the reader never sees "delta"
    stats = stats_unit(recipe, "bridge", unit)[0].finalize()
    recorded = NormStats.from_json(manifest.source("bridge").norm_stats)  # the same Bridge episodes, read from RLDS
    assert stats.actions.count == recorded.actions.count
    np.testing.assert_allclose(stats.actions.mean, recorded.actions.mean, rtol=1e-9, atol=1e-12)
