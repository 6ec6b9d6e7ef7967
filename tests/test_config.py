"""The shipped assets resolve from anywhere, and every TOML config refuses unknown keys the same way."""

from __future__ import annotations

import json
import re

import pytest
from support.recipes import RecipeDraft, source

from kidata import assets
from kidata.config import ConfigError, apply_overrides, from_table, read_toml
from kidata.locate import NotFound
from kidata.model.config import ModelConfig
from kidata.pipelines.recipe import load_recipe
from kidata.tokenizers.text import TextTokenizer
from kidata.training.config import TrainConfig


def test_shipped_recipes_and_presets_load_by_their_short_names_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("pipelines/demo.toml")
    assert recipe.mixture.name == "demo" and recipe.base_dir == str(assets.ROOT / "pipelines")
    assert TrainConfig.load("model/ki_tiny.toml").model.image_size == 96
    assert ModelConfig.load("model/ki_2b.toml").width == 2048


def test_a_local_file_wins_over_the_shipped_asset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines").mkdir()
    RecipeDraft({"name": "mine"}, (source("s", "metaworld", tasks=["reach"]),)).write(tmp_path / "pipelines" / "demo.toml")
    assert load_recipe("pipelines/demo.toml").mixture.name == "mine"


def test_the_demo_text_tokenizer_resolves_from_a_recipe_outside_the_checkout(tmp_path):
    recipe_path = tmp_path / "r.toml"
    RecipeDraft({"name": "m"}, (source("s", "metaworld", tasks=["reach"]),)).write(recipe_path)
    recipe = load_recipe(recipe_path)
    tokenizer = TextTokenizer.load(recipe.mixture.text_tokenizer, base_dir=recipe.base_dir)  # as the build loads it
    assert tokenizer.source == str(assets.ROOT / "tokenizers" / "demo-text" / "tokenizer.model")


def test_a_missing_file_names_both_places_and_what_ships(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound, match=rf"recipe 'pipelines/dmeo.toml': {re.escape(str(tmp_path))}/pipelines/dmeo.toml "
                                       r"does not exist; no shipped asset of that name \(shipped pipelines, in "
                                       r".*'pipelines/demo.toml'"):
        load_recipe("pipelines/dmeo.toml")


def test_every_shipped_asset_is_listed():
    listing = assets.listing()
    assert "pipelines/oxe_magic_soup.toml" in listing["pipelines"]
    assert listing["model"] == ["model/ki_2b.toml", "model/ki_2b_lora.toml", "model/ki_metaworld.toml", "model/ki_tiny.toml"]
    assert listing["tokenizers"] == ["tokenizers/demo-text"]


def test_invalid_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nwidth = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_toml(bad)


def test_unknown_keys_are_refused_with_the_nearest_in_model_presets(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("[model]\nwidht = 64\n")
    with pytest.raises(ConfigError, match=r"p.toml: unknown key 'model.widht' \(did you mean 'width'\?\)"):
        ModelConfig.load(preset)


def test_toml_integers_fill_float_fields_and_lists_fill_tuple_fields():
    from kidata.training.config import OptimConfig

    optim = from_table(OptimConfig, {"lr": 1, "betas": [0.9, 0.95]}, "")
    assert optim.lr == 1.0 and isinstance(optim.lr, float) and optim.betas == (0.9, 0.95)


def test_overrides_land_in_their_sections_without_touching_the_original():
    data = {"optim": {"lr": 1e-4}}
    merged = apply_overrides(data, ["--optim.lr", "5e-5", "--train.steps=7"])
    assert merged == {"optim": {"lr": 5e-5}, "train": {"steps": 7}} and data == {"optim": {"lr": 1e-4}}


def test_load_takes_a_preset_name_and_nested_overrides_and_equals_the_command_lines_config(tmp_path):
    from kidata.training.config import load

    overrides = {"train": {"steps": 3}, "optim": {"lr": 5e-5}, "data": {"manifest": tmp_path / "manifest.json",
                                                                       "weights": {"bridge": 1}}}
    config = load("ki_tiny", overrides)
    assert (config.train.steps, config.optim.lr, config.data.manifest) == (3, 5e-5, str(tmp_path / "manifest.json"))
    assert config.data.weights == {"bridge": 1}
    assert config == TrainConfig.load("model/ki_tiny.toml", [
        "--train.steps", "3", "--optim.lr", "5e-5", "--data.manifest", str(tmp_path / "manifest.json"),
        "--data.weights", "{bridge = 1}"])
    assert load("ki_tiny") == TrainConfig.load("model/ki_tiny.toml")


def test_a_mistake_in_python_overrides_is_named_as_the_overrides_key_not_the_presets():
    from kidata.training.config import load

    with pytest.raises(ValueError, match=r"^overrides: unknown key 'train.stepz' \(did you mean 'steps'\?\)$"):
        load("ki_tiny", {"train": {"stepz": 3}})
    with pytest.raises(ValueError, match=r"^overrides: unknown table 'trian' \(did you mean 'train'\?\)$"):
        load("ki_tiny", {"trian": {"steps": 3}})
    with pytest.raises(ValueError, match=r"^overrides: train.steps = '3': expected an integer, got str$"):
        load("ki_tiny", {"train": {"steps": "3"}})
    with pytest.raises(ValueError, match=r"^overrides: train = 3: expected a table"):
        load("ki_tiny", {"train": 3})


def test_a_choice_field_takes_a_string_and_names_its_choices_otherwise():
    from kidata.training.config import load

    with pytest.raises(ValueError, match=r"^overrides: policy.action_head = 3: expected a string, got int$"):
        load("ki_tiny", {"policy": {"action_head": 3}})
    with pytest.raises(ValueError, match=r"^command line: --model.variant = 3: expected a string, got int$"):
        TrainConfig.load("ki_tiny", ["--model.variant", "3"])
    with pytest.raises(ValueError, match=r"variant must be one of \('ki', 'joint', 'pi0', 'pi0_fast', 'frozen', "
                                         r"'hybrid', 'vlm'\), got 'ki2'"):
        load("ki_tiny", {"model": {"variant": "ki2"}})


def test_the_policy_table_sets_how_a_run_acts_and_refuses_what_its_model_cannot_do():
    tiny = assets.ROOT / "model" / "ki_tiny.toml"
    assert TrainConfig.load(tiny).policy.action_head == "auto" and TrainConfig.load(tiny).policy.replan == 5
    chosen = TrainConfig.load(tiny, ["--policy.action_head", "fast", "--policy.replan", "3"]).policy
    assert (chosen.action_head, chosen.replan) == ("fast", 3)
    with pytest.raises(ValueError, match=r"policy.action_head 'tokens': choose one of \('auto', 'flow', 'fast'\)"):
        TrainConfig.load(tiny, ["--policy.action_head", "tokens"])
    with pytest.raises(ValueError, match="policy.action_head 'fast': the pi0 model trains no action tokens"):
        TrainConfig.load(tiny, ["--model.variant", "pi0", "--policy.action_head", "fast"])
    with pytest.raises(ValueError, match="policy.action_head 'flow': the pi0_fast model has no action expert"):
        TrainConfig.load(tiny, ["--model.variant", "pi0_fast", "--policy.action_head", "flow"])
    with pytest.raises(ValueError, match="policy.fast_fallback 'flow': the pi0_fast model has no action expert"):
        TrainConfig.load(tiny, ["--model.variant", "pi0_fast", "--policy.fast_fallback", "flow"])
    with pytest.raises(ValueError, match=r"policy.fast_fallback 'expert': choose one of \('relaxed', 'flow'\)"):
        TrainConfig.load(tiny, ["--policy.fast_fallback", "expert"])
    with pytest.raises(ValueError, match="policy.replan must be >= 1"):
        TrainConfig.load(tiny, ["--policy.replan", "0"])


def test_the_policy_tables_temporal_ensemble_is_off_unless_set_and_must_be_a_finite_number():
    tiny = assets.ROOT / "model" / "ki_tiny.toml"
    assert TrainConfig.load(tiny).policy.temporal_ensemble is None
    chosen = TrainConfig.load(tiny, ["--policy.temporal_ensemble", "0"]).policy.temporal_ensemble
    assert chosen == 0.0 and isinstance(chosen, float)
    assert TrainConfig.load(tiny, ["--policy.temporal_ensemble", "0.01"]).policy.temporal_ensemble == 0.01
    for bad in ("nan", "inf"):
        with pytest.raises(ValueError, match=r"policy.temporal_ensemble must be a finite number \(ACT's decay"):
            TrainConfig.load(tiny, ["--policy.temporal_ensemble", bad])
    for bad in ("true", "fast"):
        with pytest.raises(ValueError, match=r"--policy.temporal_ensemble = .*: expected a number or nothing"):
            TrainConfig.load(tiny, ["--policy.temporal_ensemble", bad])


def test_an_override_of_the_wrong_type_is_one_sentence_naming_key_value_and_expected_type():
    tiny = assets.ROOT / "model" / "ki_tiny.toml"
    with pytest.raises(ValueError, match=r"^command line: --train.steps = 'ten': expected an integer, got str$"):
        TrainConfig.load(tiny, ["--train.steps", "ten"])
    with pytest.raises(ValueError, match=r"--optim.lr = 'fast': expected a number, got str"):
        TrainConfig.load(tiny, ["--optim.lr", "fast"])
    with pytest.raises(ValueError, match=r"--train.steps = True: expected an integer, got bool"):
        TrainConfig.load(tiny, ["--train.steps", "true"])
    assert TrainConfig.load(tiny, ["--optim.lr", "1"]).optim.lr == 1.0  # an integer is a number


def test_a_preset_value_of_the_wrong_type_names_the_file_and_key(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text((assets.ROOT / "model" / "ki_tiny.toml").read_text().replace("steps = 300", 'steps = "300"'))
    with pytest.raises(ValueError, match=r"p.toml: train.steps = '300': expected an integer, got str"):
        TrainConfig.load(preset)


def test_a_run_saved_before_the_policy_table_existed_loads_with_its_defaults():
    saved = TrainConfig.load(assets.ROOT / "model" / "ki_tiny.toml").to_json()
    del saved["policy"]
    assert TrainConfig.from_mapping(saved).policy.action_head == "auto"


def test_the_augment_table_names_augments_arguments_and_refuses_unknown_keys():
    import inspect

    from kidata.loader import Augment
    from kidata.training.config import AUGMENT_STRENGTHS, AugmentStrengths

    assert list(AUGMENT_STRENGTHS) == list(inspect.signature(Augment).parameters)
    config = TrainConfig.load("model/ki_tiny.toml", ["--data.augment", "{ degrees = 0.0, crop = 1.0 }"])
    assert config.data.augment == AugmentStrengths(degrees=0.0, crop=1.0)
    assert config.data.augment_setting == {"crop": 1.0, "degrees": 0.0}
    with pytest.raises(ValueError, match=r"unknown key data.augment.degree \(did you mean 'degrees'\?\)"):
        TrainConfig.load("model/ki_tiny.toml", ["--data.augment", "{ degree = 0.0 }"])
    with pytest.raises(ValueError, match="data.augment must be true, false or a table"):
        TrainConfig.load("model/ki_tiny.toml", ["--data.augment", "sometimes"])


def test_nested_option_tables_are_dataclasses_that_save_and_print_as_written():
    from kidata.training.config import MetaworldEval, load

    config = load("ki_tiny", {"eval": {"metaworld": {"tasks": ["reach"], "episodes": 2}}})
    assert config.eval.metaworld == MetaworldEval(tasks=("reach",), episodes=2)
    assert config.eval.metaworld.replan is None and config.eval.metaworld.max_steps is None
    saved = json.loads(json.dumps(config.to_json()))
    assert saved["eval"]["metaworld"] == {"tasks": ["reach"], "episodes": 2}
    assert TrainConfig.from_mapping(saved) == config
    unset = load("ki_tiny")
    assert unset.eval.metaworld is None and unset.to_json()["eval"]["metaworld"] == {}
    assert TrainConfig.from_mapping(json.loads(json.dumps(unset.to_json()))) == unset
    with pytest.raises(ValueError, match=r"^eval.metaworld.episodes = 'two': expected an integer or nothing, got str$"):
        load("ki_tiny", {"eval": {"metaworld": {"tasks": ["reach"], "episodes": "two"}}})


def test_print_config_shows_a_presets_option_table_as_the_preset_writes_it(capsys):
    from kidata.cli import main

    assert main(["train", "--model", "ki_metaworld", "--print-config"]) == 0
    assert ('metaworld = { "tasks" = ["reach", "push", "button-press-topdown"], "episodes" = 5, "max_steps" = 300 }\n'
            in capsys.readouterr().out)


def test_print_config_writes_the_resolved_preset_as_toml_that_loads_back_to_the_same_config(tmp_path, capsys):
    from kidata.cli import main

    overrides = ["--train.steps", "500", "--data.weights", "{bridge = 0.7, vqa = 0.3}", "--optim.lr", "1e-4"]
    assert main(["train", "--model", "ki_tiny", *overrides, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "[train]\nsteps = 500\n" in printed
    (tmp_path / "resolved.toml").write_text(printed)
    tiny = assets.ROOT / "model" / "ki_tiny.toml"
    assert TrainConfig.load(tmp_path / "resolved.toml") == TrainConfig.load(tiny, overrides)
    assert not (tmp_path / "runs").exists()


def test_a_table_read_with_numbers_as_written_keeps_an_integer_in_a_float_field():
    from kidata.training.config import OptimConfig

    assert type(from_table(OptimConfig, {"lr": 1}, "", numbers_as_written=True).lr) is int
