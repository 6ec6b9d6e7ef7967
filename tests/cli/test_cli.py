"""The kidata command line: fast fit / fast report on chunk files of different shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kidata import assets
from kidata.cli import main
from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer


def test_help_lists_the_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "kidata.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("fast", "demo"):
        assert command in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "kidata.cli", "fast", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in result.stdout and "report" in result.stdout


@pytest.mark.parametrize("shape", [(50, 8), (16, 14)])
def test_fast_fit_writes_a_loadable_tokenizer_and_its_report(tmp_path, capsys, shape):
    horizon, dim = shape
    chunk_file = tmp_path / "chunks.npy"
    np.save(chunk_file, action_chunks(1500, horizon, dim, seed=2))
    out = tmp_path / "tok"
    assert main(["fast", "fit", "--chunks", str(chunk_file), "--vocab-size", "400", "--scale", "10",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "tokens per chunk" in printed and "compression vs naive" in printed
    tokenizer = FastTokenizer.load(out)
    assert (tokenizer.time_horizon, tokenizer.action_dim, tokenizer.vocab_size) == (horizon, dim, 400)
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["chunks"] == 1500 and len(report["rmse_per_dim"]) == dim
    assert report["clipped_values"] == 0 and report["decode_failures"] == 0
    assert report["tokens_mean"] < horizon * dim
    assert sum(report["token_count_histogram"].values()) == 1500
    for png in ("token_histogram.png", "reconstruction_error.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_report_on_the_universal_tokenizer(fast_plus_dir, tmp_path, capsys):
    chunk_file = tmp_path / "chunks.npy"
    chunks = action_chunks(300, 10, 7, seed=4)
    chunks[1, :, 1] = -20.0  # DC -63.2 -> below FAST+'s min_token -35.4: clipped
    np.save(chunk_file, chunks)
    assert main(["fast", "report", str(fast_plus_dir), "--chunks", str(chunk_file),
                 "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["vocab_size"] == 2048
    assert report["clipped_values"] == 1
    assert "clipped values 1" in capsys.readouterr().out


def test_chunk_files_must_be_three_dimensional(tmp_path):
    chunk_file = tmp_path / "flat.npy"
    np.save(chunk_file, np.zeros((10, 7)))
    with pytest.raises(SystemExit, match="expected normalized chunks"):
        main(["fast", "report", "unused", "--chunks", str(chunk_file)])


def test_inspect_without_a_build_shows_example_samples_with_their_boundary(capsys):
    assert main(["inspect", "--example", "vqa", "robot", "--horizon", "4", "--action-dim", "3"]) == 0
    out = capsys.readouterr().out
    assert "what color is the cup" in out and "blue" in out and "pick up the red block" in out
    assert out.count("||") >= 2  # each sample shows where the prefix ends


def test_fetch_images_exits_1_when_any_image_failed(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_url": ["file:///etc/hostname"], "image_sha256": [None]}), tmp_path / "p.parquet")
    code = main(["fetch-images", "--parquet", str(tmp_path / "p.parquet"), "--mirror", str(tmp_path / "mirror"),
                 "--quiet"])
    assert code == 1 and "refused_scheme" in (tmp_path / "mirror" / "fetch_report.json").read_text()


def _commands(parser, prefix=("kidata",)):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))


def test_every_option_of_every_command_says_what_it_is_for():
    from kidata.cli import build_parser

    silent = [f"{' '.join(prefix)} {action.option_strings or action.dest}" for prefix, parser in _commands(build_parser())
              for action in parser._actions if not action.help and action.dest != "help"
              and type(action).__name__ != "_SubParsersAction"]
    assert silent == []


def test_every_leaf_command_shows_an_example_and_its_defaults():
    from kidata.cli import build_parser

    leaves = [(prefix, parser) for prefix, parser in _commands(build_parser())
              if not any(type(a).__name__ == "_SubParsersAction" for a in parser._actions)]
    assert len(leaves) >= 13
    for prefix, parser in leaves:
        text = parser.format_help()
        assert "example" in text, " ".join(prefix)
    assert "(default: 5)" in dict((" ".join(p), q) for p, q in leaves)["kidata eval metaworld"].format_help()


def _option(prefix: str, flag: str):
    from kidata.cli import build_parser

    parser = dict((" ".join(p), q) for p, q in _commands(build_parser()))[prefix]
    return next(action for action in parser._actions if flag in action.option_strings)


def test_the_commands_choices_are_the_config_fields_declared_choices():
    from kidata import policy
    from kidata.choices import ActionHead, FastFallback, InferencePrecision, PromptFormat, StateEncoding
    from kidata.config import choices

    assert _option("kidata eval metaworld", "--action-head").choices == ("auto", "flow", "fast") == choices(ActionHead)
    assert _option("kidata serve", "--action-head").choices == choices(ActionHead)
    assert _option("kidata eval metaworld", "--fast-fallback").choices == ("relaxed", "flow") == choices(FastFallback)
    for command in ("kidata eval metaworld", "kidata serve"):
        assert _option(command, "--precision").choices == tuple(policy.PRECISIONS) == choices(InferencePrecision)
    assert _option("kidata inspect", "--prompt-format").choices == ("pi05", "pi0fast", "pi0") == choices(PromptFormat)
    assert _option("kidata inspect", "--state-encoding").choices == choices(StateEncoding)


def test_compare_help_shows_the_compare_configs_defaults():
    from dataclasses import fields

    from kidata.compare import CompareConfig

    defaults = {f.name: f.default for f in fields(CompareConfig)}
    assert _option("kidata compare", "--steps").default == defaults["steps"] == 2000
    assert _option("kidata compare", "--variants").default == ",".join(defaults["variants"]) == "ki,pi0,joint,pi0_fast,frozen"
    assert _option("kidata compare", "--cotrain").default == "on,off"
    assert _option("kidata compare", "--metaworld-episodes").default == 0
    from kidata.cli import build_parser

    compare = dict((" ".join(p), q) for p, q in _commands(build_parser()))["kidata compare"].format_help()
    assert "(default: 2000)" in compare and "(default: 0)" in compare and "(default: )" not in compare


def test_train_help_lists_every_tables_fields_with_their_defaults_and_choices():
    from kidata.cli import build_parser

    text = " ".join(dict((" ".join(p), q) for p, q in _commands(build_parser()))["kidata train"].format_help().split())
    assert "[train] steps = 1000, seed = 0, precision = \"auto\" (auto | fp32 | bf16)," in text
    assert "[optim] lr = 0.0001, betas = [0.9, 0.95]," in text
    assert "[policy] action_head = \"auto\" (auto | flow | fast), replan = 5," in text
    assert "temporal_ensemble = unset" in text


def test_commands_are_listed_in_the_order_of_the_journey():
    from kidata.cli import build_parser

    lines = [line.split()[0] for line in build_parser().format_help().splitlines() if line.startswith("    ")
             and not line.startswith("     ")]
    journey = [lines.index(name) for name in ("demo", "fast", "build", "inspect", "train", "eval")]
    assert journey == sorted(journey)


def test_fast_fit_refuses_a_scale_it_would_ignore(tmp_path):
    with pytest.raises(SystemExit, match="give --scale or --target-rmse, not both"):
        main(["fast", "fit", "--chunks", str(tmp_path / "c.npy"), "--scale", "10", "--target-rmse", "0.01",
              "--out", str(tmp_path / "f")])


def test_a_typo_in_a_command_line_override_is_named_as_the_command_lines(capsys):
    assert main(["train", "--model", "ki_tiny", "--train.stepz", "3"]) == 2
    assert "command line: unknown key '--train.stepz' (did you mean 'steps'?)" in capsys.readouterr().err


def test_a_typo_in_compares_overrides_is_refused_before_anything_is_built(tmp_path, capsys):
    assert main(["compare", "--recipe", "demo", "--model", "ki_tiny", "--out", str(tmp_path / "cmp"),
                 "--train.stepz", "3"]) == 2
    assert "command line: unknown key '--train.stepz' (did you mean 'steps'?)" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_shipped_presets_and_recipes_are_addressable_by_name_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["model", "params", "ki_tiny"]) == 0 and "ki_tiny: vision" in capsys.readouterr().out
    from kidata.pipelines.recipe import load_recipe
    from kidata.training.config import TrainConfig

    assert load_recipe("demo").mixture.name == "demo" and TrainConfig.load("ki_metaworld").model.image_size == 112


def test_serving_a_folder_that_is_not_a_run_is_one_sentence(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["serve", "--run", str(tmp_path / "no-run")]) == 2
    assert "no-run: not a kidata run (no config.json); pass the --out folder of `kidata train`" in capsys.readouterr().err


def test_a_key_map_that_is_neither_a_preset_nor_a_valid_file_is_named(tmp_path):
    from kidata.serving.keymaps import keymap

    with pytest.raises(FileNotFoundError, match=r"--keys 'liberoo': neither a preset \(\['droid', 'kidata', 'libero'\]\)"):
        keymap("liberoo")
    (tmp_path / "k.json").write_text('{"imgs": {}}')
    with pytest.raises(ValueError, match=r"k.json: a key map has images .*found \['imgs'\]"):
        keymap(str(tmp_path / "k.json"))


def test_assets_copy_refuses_an_unshipped_name_and_an_existing_target(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="pipelines/nope.toml is not shipped"):
        main(["assets", "copy", "pipelines/nope.toml"])
    assert main(["assets", "copy", "pipelines/my_robot.toml"]) == 0 and (tmp_path / "my_robot.toml").exists()
    with pytest.raises(SystemExit, match="my_robot.toml exists; give another destination"):
        main(["assets", "copy", "pipelines/my_robot.toml"])


def test_assets_copy_takes_the_bare_names_that_build_and_train_take(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["assets", "copy", "demo"]) == 0
    assert (tmp_path / "demo.toml").read_bytes() == (assets.ROOT / "pipelines" / "demo.toml").read_bytes()
    assert main(["assets", "copy", "ki_tiny"]) == 0 and (tmp_path / "ki_tiny.toml").exists()
    assert main(["assets", "copy", "demo-text"]) == 0 and (tmp_path / "demo-text").is_dir()


def test_fast_chunks_writes_the_sample_a_build_fits_fast_on_and_fast_fit_reads_it(tmp_path, capsys):
    """The README's FAST steps from a recipe: chunks -> fit -> report, on the LeRobot fixture."""
    pytest.importorskip("pyarrow")
    from support.data import shared_path
    from support.recipes import lerobot_recipe

    from kidata.pipelines.recipe import load_recipe
    from kidata.pipelines.stats_pass import recipe_chunks

    recipe = lerobot_recipe(tmp_path / "r.toml", shared_path("data", "lerobot", "bridge_v3"), units=1)
    out = tmp_path / "chunks.npy"
    assert main(["fast", "chunks", "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 0
    written = np.load(out)
    expected, _ = recipe_chunks(load_recipe(recipe), progress=False)
    assert written.dtype == expected.dtype == np.float64 and written.shape[1:] == (4, 7) and np.array_equal(written, expected)
    assert f"{out}: {len(written)} normalized chunks of shape (4, 7)" in capsys.readouterr().out
    assert main(["fast", "fit", "--chunks", str(out), "--vocab-size", "300", "--out", str(tmp_path / "tok"), "--quiet"]) == 0
    assert main(["fast", "report", str(tmp_path / "tok"), "--chunks", str(out), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert (tmp_path / "rep" / "report.json").exists()


def test_fast_push_refuses_a_repo_id_that_is_not_org_slash_name(tmp_path):
    from kidata.tokenizers.hub import push

    (tmp_path / "processor_config.json").write_text("{}")
    with pytest.raises(ValueError, match="--repo 'just-a-name': a hub repo id is org/name"):
        push(tmp_path, "just-a-name")


@pytest.mark.parametrize(("flags", "named"), [(["--vocab-size", "400"], "--vocab-size is"),
                                              (["--scale", "4", "--margin", "3"], "--scale, --margin are")])
def test_fast_fit_on_a_recipe_refuses_the_fit_flags_it_would_not_use(tmp_path, flags, named):
    with pytest.raises(SystemExit, match=rf"^kidata fast fit: {named} for --chunks; with --recipe the fit options are "
                                         r"the \[mixture\] fast_tokenizer table of demo, so set them there"):
        main(["fast", "fit", "--recipe", "demo", "--out", str(tmp_path / "tok"), *flags])
    assert not (tmp_path / "tok").exists()


def test_fast_fit_on_a_recipe_that_bins_its_actions_says_its_build_would_not_fit_this_tokenizer(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from support.data import shared_path
    from support.recipes import lerobot_bridge, mixture_recipe

    recipe = mixture_recipe(lerobot_bridge(shared_path("data", "lerobot", "bridge_v3")), units=1,
                            fast_tokenizer={"bins": 16}).write(tmp_path / "r.toml")
    assert main(["fast", "fit", "--recipe", str(recipe), "--out", str(tmp_path / "tok"), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"the recipe's fast_tokenizer = {{'bins': 16}} fits no FAST tokenizer, so this one took the fit's defaults; "
        f"to build with it, set [mixture] fast_tokenizer = \"{tmp_path / 'tok'}\"")


def test_verify_and_inspect_given_a_recipe_instead_of_its_build_say_to_build_it_first(tmp_path, capsys):
    from support.recipes import RecipeDraft, source

    recipe = RecipeDraft({"name": "m"}, (source("scenes", "metaworld_scenes", tasks=["reach"]),)).write(tmp_path / "r.toml")
    said = f"{recipe} is a file, not a build's output folder: build it first (kidata build {recipe} --out OUT) and pass OUT"
    assert main(["verify", str(recipe)]) == 1
    assert capsys.readouterr().out.splitlines() == [said, "1 problem(s)"]
    assert main(["inspect", str(recipe)]) == 2
    assert capsys.readouterr().err == f"kidata inspect: {said} [NotADirectoryError; --debug shows the traceback]\n"


def test_an_override_missing_its_value_is_named_rather_than_taking_the_data_flag_as_its_value(tmp_path, capsys):
    assert main(["train", "--model", "ki_tiny", "--data", str(tmp_path / "m.json"), "--print-config",
                 "--train.steps"]) == 2
    assert capsys.readouterr().err == "kidata train: --train.steps needs a value\n"
    assert main(["train", "--model", "ki_tiny", "--print-config", "--train.steps", "--optim.lr", "3"]) == 2
    assert capsys.readouterr().err == ("kidata train: --train.steps needs a value (the next argument is the flag "
                                       "--optim.lr)\n")


def test_an_option_train_does_not_have_is_named_as_neither_an_option_nor_an_override(capsys):
    assert main(["train", "--model", "ki_tiny", "--print-config", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("kidata train: --device: not an option of this command, nor a --section.key "
                                       "override (such as --train.steps 3)\n")
