"""The diagnostics a user reaches for when a Meta-World policy fails: train/eval parity (each
planted mismatch named), the privileged baseline's data and policy, per-step open-loop error,
closed-loop success during training, and the goal marker. Their machinery only: no success
threshold is asserted anywhere."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld", reason="Meta-World needs the 'sim' extra")
torch = pytest.importorskip("torch")

from support import recipes  # noqa: E402

from kidata.config import apply_overrides  # noqa: E402
from kidata.eval.chunking import Chunking  # noqa: E402
from kidata.eval.metaworld import ExpertPolicy, SceneSettings, evaluate_metaworld  # noqa: E402
from kidata.recipe import MixtureConfig, Recipe, SourceConfig  # noqa: E402
from kidata.training.config import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPE = recipes.RecipeDraft(
    {"name": "mw", "action_horizon": 4, "image_size": 64, "state_encoding": "continuous", "max_tokens": 64,
     "holdout": 0.5, "units_per_source": 1, "fast_tokenizer": {"fit": True, "vocab_size": 300, "scale": 10.0}},
    (recipes.source("metaworld", "metaworld", tasks=["reach"], episodes_per_task=4,
                    cameras={"base_0": "corner", "left_wrist_0": "gripperPOV"}, goal_marker_scale=2.0),))
MODEL = {"model": {"image_size": 64, "action_horizon": 4, "action_dim": 4, "state_dim": 4, "state_input": "prefix"},
         "data": {"cameras": ["base_0", "left_wrist_0"], "num_workers": 0, "batch_size": 4},
         "log": {"progress": False, "every": 1}, "eval": {"batches": 1, "batch_size": 4, "max_new_tokens": 8},
         "schedule": {"warmup_steps": 1}, "checkpoint": {"every": 2}}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return RECIPE.write(tmp_path_factory.mktemp("recipe") / "recipe.toml")


@pytest.fixture(scope="module")
def run(recipe, tmp_path_factory) -> Path:
    """A 2-step run on a 4-episode reach build (3 held out), with closed-loop evaluation at every eval."""
    from kidata.eval.during_training import closed_loop_hook
    from kidata.pipelines.build import build
    from kidata.pipelines.recipe import load_recipe
    from kidata.training.trainer import train

    out = tmp_path_factory.mktemp("build")
    build(load_recipe(recipe), str(out), progress=False)
    run = tmp_path_factory.mktemp("runs") / "run"
    config = load("ki_tiny", apply_overrides(MODEL, {
        "data": {"manifest": out / "manifest.json"}, "train": {"steps": 2},
        "eval": {"every": 1, "metaworld": {"tasks": ["reach"], "episodes": 1, "max_steps": 10}}}))
    train(config, run, closed_loop=closed_loop_hook(config))
    return run


@pytest.fixture(scope="module")
def policy(run):
    from kidata import policy as policies

    return policies.load(run)


def test_closed_loop_runs_at_multiples_of_its_own_interval_and_at_the_end_but_not_at_step_0():
    config = load("ki_tiny", {"train": {"steps": 1000}, "eval": {
        "every": 100, "at_start": True, "metaworld": {"tasks": ["reach"], "episodes": 2, "every": 400}}})
    evaluated = [step for step in range(0, 1001, 100) if config.eval.closed_loop_at(step, 1000)]
    assert evaluated == [400, 800, 1000]
    default = load("ki_tiny", {"train": {"steps": 300}, "eval": {"every": 100, "metaworld": {"tasks": ["reach"]}}})
    assert [s for s in range(0, 301, 100) if default.eval.closed_loop_at(s, 300)] == [100, 200, 300]
    with pytest.raises(ValueError, match="eval.metaworld.every must be >= 1"):
        load("ki_tiny", {"eval": {"metaworld": {"tasks": ["reach"], "every": 0}}})


@pytest.mark.slow
def test_parity_holds_between_the_data_path_and_the_live_policy(policy):
    from kidata.eval.parity import check_parity

    report = check_parity(policy, samples=2)
    assert report["ok"] and len(report["samples"]) == 2
    for sample in report["samples"]:
        assert set(sample["tensors"]) == {"image_mask", "tokens", "token_mask", "ar", "prefix_length",
                                          "expert_context", "state_dim_mask", "state", "images"}
        assert sample["tensors"]["state"]["max_abs_diff"] < 1e-5
        assert max(sample["tensors"]["images"]["mean_abs_diff_per_camera"]) < 0.02  # JPEG coding only


@pytest.mark.slow
def test_parity_names_swapped_cameras(policy, monkeypatch):
    from kidata.eval import parity

    swapped = SceneSettings(cameras={"base_0": "gripperPOV", "left_wrist_0": "corner"}, image_size=64,
                            goal_marker_scale=2.0)
    monkeypatch.setattr(SceneSettings, "from_recipe", classmethod(lambda cls, recipe, source=None: swapped))
    report = parity.check_parity(policy, samples=1)
    tensors = report["samples"][0]["tensors"]
    assert not report["ok"] and not tensors["images"]["ok"]
    assert all(t["ok"] for name, t in tensors.items() if name != "images")


@pytest.mark.slow
def test_parity_names_a_state_normalized_differently(policy, monkeypatch):
    from kidata.eval.parity import check_parity

    stats = policy.stats
    lowered = [value - 0.1 for value in stats.state.q01]  # another normalization of the same state
    shifted = dataclasses.replace(stats, state=dataclasses.replace(stats.state, q01=lowered))
    monkeypatch.setattr(policy, "stats", shifted)
    report = check_parity(policy, samples=1)
    tensors = report["samples"][0]["tensors"]
    assert not report["ok"] and not tensors["state"]["ok"] and tensors["images"]["ok"] and tensors["tokens"]["ok"]


@pytest.mark.slow
def test_parity_names_a_prompt_that_differs(policy, monkeypatch):
    import kidata.envs.metaworld as env
    from kidata.eval import parity

    monkeypatch.setattr(env, "instruction", lambda task: "reach the goal now")  # the policy is told another task
    report = parity.check_parity(policy, samples=1)
    tensors = report["samples"][0]["tensors"]
    assert not report["ok"] and not tensors["tokens"]["ok"] and tensors["state"]["ok"]


@pytest.mark.slow
def test_closed_loop_success_lands_in_metrics_at_every_evaluation(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval" in r]
    assert [r["step"] for r in evaluations] == [1, 2]
    for record in evaluations:
        assert set(record["eval"]) >= {"metaworld_success", "metaworld_success/reach-v3", "action_mse",
                                       "action_mse_step"}
        assert record["eval"]["metaworld_success"] in (0.0, 1.0)  # one episode
        assert len(record["eval"]["action_mse_step"]) == 4
    assert (run / "loss_curves.png").exists()


def test_the_metaworld_eval_table_refuses_unknown_keys_and_missing_tasks():
    with pytest.raises(ValueError, match="unknown key eval.metaworld.episode .*'episodes'"):
        load("ki_tiny", {"eval": {"metaworld": {"tasks": ["reach"], "episode": 3}}})
    with pytest.raises(ValueError, match="needs tasks"):
        load("ki_tiny", {"eval": {"metaworld": {"episodes": 3}}})


@pytest.mark.slow
def test_scene_settings_come_from_the_runs_recipe_and_a_mixture_without_metaworld_is_refused(policy):
    settings = SceneSettings.from_recipe(policy.manifest.recipe)
    assert settings == SceneSettings(cameras={"base_0": "corner", "left_wrist_0": "gripperPOV"}, image_size=64,
                                     goal_marker_scale=2.0)
    recipe = Recipe(MixtureConfig("m", image_size=64), (SourceConfig("bridge", "rlds"),), ".")
    with pytest.raises(ValueError, match=r"no Meta-World source \(sources: \['bridge'\]\)"):
        SceneSettings.from_recipe(recipe)


def test_privileged_demonstrations_are_the_recipes_training_episodes(recipe):
    from kidata.eval.privileged import OBSERVATION_DIM, collect
    from kidata.hashing import in_holdout

    data = collect(recipe)
    kept = [e for e in range(4) if not in_holdout("metaworld", f"reach-v3-s0-e{e:05d}", 0.5)]
    assert 0 < data.episodes == len(kept) < 4  # the build's held-out episodes stay out
    assert data.tasks == ("reach-v3",)
    assert data.features.shape == (len(data.chunks), OBSERVATION_DIM + 1) and data.chunks.shape[1:] == (4, 4)
    assert (data.features[:, -1] == 1).all()
    # a chunk is the next four actions; the last action repeats past the end, marked invalid
    np.testing.assert_array_equal(data.chunks[1:, 0][:3], data.chunks[:3, 1])
    assert data.valid[-1].tolist() == [True, False, False, False]


def test_the_privileged_mlp_fits_its_demonstrations_and_refuses_unknown_tasks(recipe):
    from kidata.eval.privileged import PrivilegedPolicy, collect, train_mlp

    data = collect(recipe)
    model, losses = train_mlp(data, steps=300, batch_size=64)
    assert losses[-1] < losses[0] / 3
    policy = PrivilegedPolicy(model, data.tasks)
    chunk = policy.sample_actions({"env_obs": data.features[0, :39], "task": "reach-v3"})
    assert chunk.shape == (4, 4) and np.abs(chunk - data.chunks[0]).mean() < np.abs(data.chunks[0]).mean()
    with pytest.raises(KeyError, match="trained on \\['reach-v3'\\], not 'push-v3'"):
        policy.sample_actions({"env_obs": data.features[0, :39], "task": "push-v3"})


def test_the_evaluator_records_each_episode_and_plots_its_predicted_chunks(tmp_path):
    result = evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=2, chunking=Chunking(replan=1), max_steps=200, out=tmp_path)
    assert [e["episode"] for e in result["episodes"]["reach-v3"]] == [0, 1]
    assert all(e["success"] and 0 < e["steps"] < 200 for e in result["episodes"]["reach-v3"])
    assert (tmp_path / "reach-v3-episode0-actions.png").exists() and not (tmp_path / "reach-v3-episode1.png").exists()
    assert json.loads((tmp_path / "metaworld_eval.json").read_text())["scene"]["goal_marker_scale"] == 1.0


def test_training_layouts_are_the_builds_training_episodes_and_the_evaluator_starts_from_them(recipe):
    from kidata.eval.metaworld import training_layouts
    from kidata.hashing import in_holdout
    from kidata.pipelines.recipe import load_recipe

    recorded = Recipe.of(load_recipe(recipe))  # what a run's manifest records
    kept = [e for e in range(4) if not in_holdout("metaworld", f"reach-v3-s0-e{e:05d}", 0.5)]
    seed, indices = training_layouts(recorded, ["reach"], len(kept))
    assert seed == 0 and indices == {"reach-v3": kept}
    result = evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=len(kept), max_steps=200, seed=seed,
                                episode_indices=indices)
    assert [e["episode"] for e in result["episodes"]["reach-v3"]] == kept == result["episode_indices"]["reach-v3"]
    assert result["success_rate"] == {"reach-v3": 1.0} and result["seed"] == 0


def test_training_layouts_refuse_more_episodes_than_trained_and_tasks_not_trained(recipe):
    from kidata.eval.metaworld import training_layouts
    from kidata.hashing import in_holdout
    from kidata.pipelines.recipe import load_recipe

    recorded = Recipe.of(load_recipe(recipe))
    trained = sum(not in_holdout("metaworld", f"reach-v3-s0-e{e:05d}", 0.5) for e in range(4))
    with pytest.raises(ValueError, match=f"trained on {trained} episodes of it .* ask for at most {trained}"):
        training_layouts(recorded, ["reach"], trained + 1)
    with pytest.raises(ValueError, match=r"push-v3 is not a training task of source 'metaworld' \(its tasks: \['reach-v3'\]\)"):
        training_layouts(recorded, ["push"], 1)


@pytest.mark.slow
def test_eval_metaworld_layouts_training_starts_a_run_from_its_own_training_episodes(run, capsys):
    from kidata.cli import main
    from kidata.hashing import in_holdout

    first_trained = next(e for e in range(4) if not in_holdout("metaworld", f"reach-v3-s0-e{e:05d}", 0.5))
    assert main(["eval", "metaworld", "--run", str(run), "--tasks", "reach", "--episodes", "1", "--max-steps", "3",
                 "--layouts", "training"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["seed"] == 0 and printed["episode_indices"] == {"reach-v3": [first_trained]}
    written = json.loads((run / "metaworld" / "metaworld_eval.json").read_text())  # --out defaults to the run's folder
    assert written["episode_indices"] == printed["episode_indices"]


@pytest.mark.slow
def test_eval_metaworld_refuses_a_run_without_a_metaworld_source_before_any_simulator_starts(run, tmp_path, monkeypatch):
    import shutil

    from kidata.cli import main
    from kidata.envs import metaworld as envs

    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("metaworld"))
    manifest = json.loads((other / "manifest.json").read_text())
    for source in manifest["recipe"]["sources"]:
        source["reader"] = "lerobot" if source["reader"] == "metaworld" else source["reader"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(envs.Scene, "__init__", lambda *a, **k: pytest.fail("a simulator started"))
    with pytest.raises(SystemExit, match=r"this run's mixture has no Meta-World source named 'metaworld' \(sources: \['metaworld'"):
        main(["eval", "metaworld", "--run", str(other), "--tasks", "reach", "--episodes", "1"])


@pytest.mark.slow
def test_a_runs_policy_table_chooses_its_action_head_replanning_and_ensemble_unless_the_command_line_does(run, tmp_path, capsys):
    import shutil

    from kidata import policy as policies
    from kidata.cli import main

    acting = tmp_path / "acting"
    shutil.copytree(run, acting)
    saved = json.loads((acting / "config.json").read_text())
    saved["policy"] = {"action_head": "fast", "replan": 2, "temporal_ensemble": 0.01}
    (acting / "config.json").write_text(json.dumps(saved))
    assert policies.load(acting).action_head == "fast" and policies.load(run).action_head == "flow"
    assert policies.load(acting, action_head="flow").action_head == "flow"
    episode = ["--tasks", "reach", "--episodes", "1", "--max-steps", "3"]
    assert main(["eval", "metaworld", "--run", str(acting), *episode]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["replan"], printed["ensemble"]) == (2, 0.01)
    assert main(["eval", "metaworld", "--run", str(acting), *episode, "--replan", "4", "--temporal-ensemble", "off"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["replan"], printed["ensemble"]) == (4, None)
    assert main(["eval", "metaworld", "--policy", "expert", *episode, "--temporal-ensemble", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["replan"], printed["ensemble"]) == (5, 0.5)
    with pytest.raises(SystemExit, match="--temporal-ensemble 'soon': a decay \\(e.g. 0.01\\) or 'off'"):
        main(["eval", "metaworld", "--policy", "expert", *episode, "--temporal-ensemble", "soon"])


@pytest.mark.slow
def test_an_invalid_fast_chunk_is_counted_and_the_expert_acts_instead_when_the_fallback_is_flow(run, monkeypatch):
    from kidata import policy as policies

    relaxed = policies.load(run, action_head="fast")
    fallback = policies.load(run, action_head="fast", fast_fallback="flow")
    flow = policies.load(run, action_head="flow")
    for planted in (relaxed, fallback):  # tokens that decode to the wrong number of coefficients
        monkeypatch.setattr(planted.encoder, "decode_generated_actions",
                            lambda generated, *, horizon, dim: (np.zeros((1, horizon, dim)), np.array([False])))
    rng = np.random.default_rng(0)
    observation = {"images": {camera: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                              for camera in ("base_0", "left_wrist_0")},
                   "state": np.array([0.0, 0.6, 0.2, 1.0]), "prompt": "reach the goal"}
    torch.manual_seed(0)
    expected = flow.sample_actions(observation)
    torch.manual_seed(0)
    np.testing.assert_array_equal(fallback.sample_actions(observation), expected)
    assert fallback.counters == {"fast_chunks": 1, "fast_invalid": 1, "flow_fallbacks": 1}
    relaxed.sample_actions(observation)
    assert relaxed.counters == {"fast_chunks": 1, "fast_invalid": 1, "flow_fallbacks": 0}
    assert flow.counters == {"fast_chunks": 0, "fast_invalid": 0, "flow_fallbacks": 0}


class CountingExpert(ExpertPolicy):
    """The scripted expert answering each query with a 5-action chunk and counting the queries."""

    def __init__(self):
        super().__init__()
        self.counters = {"queries": 0}

    def sample_actions(self, observation):
        self.counters["queries"] += 1
        return np.repeat(super().sample_actions(observation), 5, axis=0)


def test_the_evaluator_reports_a_policys_counters_per_task():
    result = evaluate_metaworld(CountingExpert(), ["reach", "push"], episodes=1, chunking=Chunking(replan=5), max_steps=10)
    assert result["policy_counters"] == {"reach-v3": {"queries": 2}, "push-v3": {"queries": 2}}
    assert "policy_counters" not in evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=1, max_steps=5)


def test_the_evaluator_executes_a_policys_chunks_as_its_run_settings_say():
    from kidata.training.config import PolicyConfig

    class Settled(CountingExpert):
        settings = PolicyConfig(replan=2)  # what a kidata Policy carries from its run's [policy]

    result = evaluate_metaworld(Settled(), ["reach"], episodes=1, max_steps=10)
    assert result["replan"] == 2 and result["policy_counters"] == {"reach-v3": {"queries": 5}}


def test_the_evaluator_refuses_zero_episodes_in_one_sentence():
    with pytest.raises(ValueError, match=r"episodes must be >= 1 \(episodes per task\), got 0"):
        evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=0)


def test_the_evaluator_refuses_an_episode_budget_below_one_rather_than_scoring_episodes_that_never_act():
    with pytest.raises(ValueError, match=r"^max_steps must be >= 1 \(the step budget of an episode\), got 0$"):
        evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=1, max_steps=0)


def test_the_evaluator_refuses_an_out_that_is_a_file_before_running_any_episode(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    with pytest.raises(FileExistsError, match=rf"^{taken} is a file, and the evaluation writes its folder of files "
                                              "there: choose another --out$"):
        evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=1, max_steps=5, out=taken)


def test_the_evaluator_refuses_a_render_size_below_one():
    with pytest.raises(ValueError, match=r"^image_size must be >= 1 \(the rendered cameras' size in pixels\), got 0$"):
        evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=1, scene=SceneSettings(image_size=0))


def test_the_evaluator_refuses_a_replanning_interval_below_one_in_one_sentence():
    with pytest.raises(ValueError, match=r"replan must be >= 1 \(actions executed per predicted chunk\), got 0"):
        evaluate_metaworld(ExpertPolicy(), ["reach"], episodes=1, chunking=Chunking(replan=0))


def test_eval_metaworld_image_size_zero_is_refused_not_replaced_by_the_default_size(capsys):
    from kidata.cli import main

    assert main(["eval", "metaworld", "--policy", "expert", "--tasks", "reach", "--episodes", "1",
                 "--image-size", "0"]) == 2
    assert "image_size must be >= 1 (the rendered cameras' size in pixels), got 0" in capsys.readouterr().err


def test_eval_metaworld_layouts_training_needs_a_run():
    from kidata.cli import main

    with pytest.raises(SystemExit, match="--layouts training needs --run"):
        main(["eval", "metaworld", "--policy", "expert", "--tasks", "reach", "--layouts", "training"])


def test_the_goal_marker_scale_enlarges_only_the_rendered_marker():
    from kidata.envs.metaworld import Scene

    green = {}
    observations = {}
    for scale in (1.0, 2.0):
        scene = Scene("push-v3", seed=0, image_size=96, goal_marker_scale=scale)
        try:
            observations[scale] = scene.reset(0)
            image = scene.render("corner").astype(int)
        finally:
            scene.close()
        green[scale] = int(((image[..., 1] > 120) & (image[..., 0] < 80) & (image[..., 2] < 80)).sum())
    np.testing.assert_array_equal(observations[1.0], observations[2.0])
    assert green[1.0] > 0 and green[2.0] >= 3 * green[1.0]  # a ball twice the radius: ~4x the pixels


def test_per_step_open_loop_error_puts_an_error_at_its_step():
    from types import SimpleNamespace

    from kidata.training.held_out import HeldOutMetrics

    stats = {"count": 10, "mean": [0.0, 0.0], "std": [1.0, 1.0], "q01": [-1.0, -1.0], "q99": [1.0, 1.0], "min": [-1.0, -1.0],
             "max": [1.0, 1.0]}
    from kidata.manifest import Encoding, Manifest, SourceEntry, TokenizerRef

    encoding = Encoding(state_encoding="text", prompt_format="pi05", action_horizon=3, action_dim=2, image_size=64,
                        max_tokens=32, normalization="mean_std", fast_token_rule="openpi", text_vocab_size=100,
                        fast_token_range=(50, 99))
    source = SourceEntry(name="s", kind="robot", weight=1.0, reader="rlds", episodes=1, samples=1, quarantined={},
                         rejected={}, skipped={}, shards=(), norm_stats={"state": stats, "actions": stats})
    manifest = Manifest("0", Recipe(MixtureConfig("m"), (), "."), "", TokenizerRef("text", "0"), TokenizerRef("fast", "0"),
                        encoding, (source,))
    truth = torch.zeros(1, 3, 2)
    predicted = truth.clone()
    predicted[0, 1, 0] = 2.0  # one error of 2 at step 1, dimension 0

    class Model:
        config = SimpleNamespace(has_expert=True, fast_loss=False)

        def sample_actions(self, batch, num_steps, noise=None):
            return predicted

    batch = {"has_actions": torch.tensor([True]), "actions": truth, "action_valid": torch.ones(1, 3, dtype=torch.bool),
             "source_index": torch.tensor([0]), "tokens": torch.zeros(1, 4, dtype=torch.long),
             "token_mask": torch.ones(1, 4, dtype=torch.bool), "prefix_length": torch.tensor([4]),
             "loss": torch.zeros(1, 4, dtype=torch.bool), "ar": torch.zeros(1, 4, dtype=torch.bool)}
    evaluator = HeldOutMetrics(manifest, SimpleNamespace(stop_ids=[], text=SimpleNamespace(loc_range=lambda: None)))
    evaluator.update(Model(), batch)
    result = evaluator.result()
    squared = (2.0 * (1.0 + 1e-6)) ** 2  # the error of 2, unnormalized by std + openpi's 1e-6
    assert result["action_mse_step"] == [0.0, round(squared / 2, 6), 0.0]  # 2 dimensions at step 1
    assert result["action_mse_dim"] == [round(squared / 3, 6), 0.0]  # over 3 steps, rounded as reported
    assert result["action_mse"] == pytest.approx(squared / 6)  # one error among 6 values
    assert result["action_mse_mean_baseline"] == 0.0  # the truth is the statistics' mean everywhere
    evaluator = HeldOutMetrics(manifest, SimpleNamespace(stop_ids=[], text=SimpleNamespace(loc_range=lambda: None)))
    evaluator.update(Model(), {**batch, "actions": torch.ones(1, 3, 2)})  # one std above the mean everywhere
    assert evaluator.result()["action_mse_mean_baseline"] == pytest.approx((1.0 + 1e-6) ** 2)


def test_episodes_past_the_fifty_variations_of_a_seed_are_new_layouts():
    from kidata.envs.metaworld import Scene

    scene = Scene("reach-v3", seed=0, image_size=16)
    try:
        goals = {episode: tuple(scene.reset(episode)[-3:].round(6)) for episode in (0, 1, 50, 51, 100)}
        again = tuple(scene.reset(50)[-3:].round(6))
    finally:
        scene.close()
    assert len(set(goals.values())) == 5  # episode 50 is not episode 0 again
    assert again == goals[50]  # and still a function of the episode index


def test_privileged_state_adds_the_object_and_goal_positions_for_the_perception_bypass():
    from kidata.envs.metaworld import robot_state

    observation = np.arange(39, dtype=np.float64)
    np.testing.assert_array_equal(robot_state(observation), [0, 1, 2, 3])
    np.testing.assert_array_equal(robot_state(observation, privileged=True), [0, 1, 2, 3, 4, 5, 6, 36, 37, 38])
    assert robot_state(observation).dtype == np.float32
    recipe = Recipe(MixtureConfig("m", image_size=64), (SourceConfig("mw", "metaworld", options={"privileged_state": True}),), ".")
    assert SceneSettings.from_recipe(recipe).privileged_state  # the evaluator gives the policy the same state
