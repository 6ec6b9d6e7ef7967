"""A tokenizer kidata fits loads in the tools that load FAST today: transformers' AutoProcessor
with the processor module written beside it gives kidata's ids and actions."""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from kidata.sources.synthetic import action_chunks  # noqa: E402
from kidata.tokenizers.fast import FastTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    fitted = FastTokenizer.fit(action_chunks(1500, 10, 7, seed=1), vocab_size=512, scale=10.0)
    return fitted, fitted.save(tmp_path_factory.mktemp("fast") / "my-robot")


def test_autoprocessor_loads_a_kidata_tokenizer_and_encodes_the_same_ids(saved):
    fitted, directory = saved
    processor = transformers.AutoProcessor.from_pretrained(str(directory), trust_remote_code=True)
    held_out = action_chunks(64, 10, 7, seed=9)
    ids = processor(held_out)
    assert [list(map(int, row)) for row in ids] == [row.tolist() for row in fitted.encode(held_out)]
    decoded = processor.decode(ids, time_horizon=10, action_dim=7)
    ours, ok = fitted.decode(fitted.encode(held_out), horizon=10, dim=7)
    assert ok.all()
    np.testing.assert_allclose(decoded, ours, atol=1e-9)


def test_chunks_past_the_fitted_range_are_clipped_by_autoprocessor_exactly_as_by_kidata(saved):
    """At 1.5x the fitted range many rounded coefficients fall past max_token; the exported module
    clips them to the range written in processor_config.json, so other tools see kidata's ids."""
    fitted, directory = saved
    processor = transformers.AutoProcessor.from_pretrained(str(directory), trust_remote_code=True)
    assert processor.max_token == fitted.max_token and processor.min_token == fitted.min_token
    wide = 1.5 * action_chunks(500, 10, 7, seed=9)
    ours = fitted.encode_detailed(wide)
    clipped_rows = sum(fitted.encode_detailed(chunk[None]).clipped > 0 for chunk in wide)
    assert clipped_rows > 100  # the case that matters: a good share of the chunks leave the range
    theirs = processor(wide)
    assert [list(map(int, row)) for row in theirs] == [row.tolist() for row in ours.tokens]
    decoded = processor.decode(theirs, time_horizon=10, action_dim=7)
    expected, ok = fitted.decode(ours.tokens, horizon=10, dim=7)
    assert ok.all() and np.abs(decoded).max() > 0
    np.testing.assert_allclose(decoded, expected, atol=1e-9)


def test_the_loader_hints_do_not_change_the_tokenizers_identity(saved):
    fitted, directory = saved
    again = FastTokenizer.load(directory)
    assert again.sha256 == fitted.sha256 and (directory / "processing_action_tokenizer.py").exists()


def test_a_hub_repo_id_loads_through_huggingface_hub(saved, monkeypatch):
    """huggingface_hub's snapshot_download stands in for the network (it is what runs online)."""
    import huggingface_hub

    fitted, directory = saved
    calls = []

    def snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, sorted(allow_patterns)))
        return str(directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = FastTokenizer.load("my-org/my-robot-fast")
    assert loaded.sha256 == fitted.sha256 and calls[0][0] == "my-org/my-robot-fast"
    assert "tokenizer.json" in calls[0][1]


def test_an_unreachable_hub_id_is_named_with_the_cache_it_looked_in(hub_offline):
    # the refusal every located thing gives (kidata.locate): each place tried, the hub cache last
    with pytest.raises(FileNotFoundError, match=r"FAST tokenizer 'my-org/absent-fast': .*/my-org/absent-fast does not "
                                                r"exist; no shipped asset of that name .*; the Hugging Face model repo "
                                                r"is not in the hub cache and could not be fetched .*the hub cache "
                                                r"looked in: "):
        FastTokenizer.load("my-org/absent-fast")


def test_a_recipe_names_a_tokenizer_by_path_table():
    from kidata.pipelines.recipe import RecipeError, parse_recipe
    from kidata.recipe import FastFrom

    base = {"name": "m", "fast_tokenizer": {"path": "my-org/my-robot-fast"}}
    sources = [{"name": "s", "reader": "metaworld", "tasks": ["reach"]}]
    assert parse_recipe({"mixture": base, "sources": sources}).mixture.fast_tokenizer == FastFrom("my-org/my-robot-fast")
    with pytest.raises(RecipeError, match="unknown key 'vocab_size'"):
        parse_recipe({"mixture": {**base, "fast_tokenizer": {"path": "x/y", "vocab_size": 3}}, "sources": sources})


def test_fast_push_uploads_the_folder_to_the_named_repo(saved, monkeypatch, capsys):
    """Exercised against a stand-in of huggingface_hub.HfApi (no hub is reachable here)."""
    import huggingface_hub

    from kidata.cli import main

    _, directory = saved
    calls = []

    class StandIn:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, exist_ok, private):
            calls.append(("create", repo_id, exist_ok, private))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", folder_path, repo_id))

    monkeypatch.setattr(huggingface_hub, "HfApi", StandIn)
    assert main(["fast", "push", str(directory), "--repo", "my-org/my-robot-fast", "--private"]) == 0
    assert calls[1:] == [("create", "my-org/my-robot-fast", True, True),
                         ("upload", str(directory), "my-org/my-robot-fast")]
    assert "https://huggingface.co/my-org/my-robot-fast" in capsys.readouterr().out
    assert main(["fast", "push", str(directory.parent), "--repo", "my-org/x"]) == 2  # not a tokenizer folder


def test_a_tokenizer_sent_by_value_to_a_build_worker_loads_and_leaves_no_folder_behind(saved, tmp_path,
                                                                                        monkeypatch):
    import tempfile

    from kidata.tokenizers import ACTION_TOKENIZER_FILES, action_tokenizer_from_files

    fitted, directory = saved
    files = {name: (directory / name).read_text() for name in ACTION_TOKENIZER_FILES
             if (directory / name).exists()}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = action_tokenizer_from_files(files)
    held_out = action_chunks(16, 10, 7, seed=3)
    assert [row.tolist() for row in loaded.encode(held_out)] == [row.tolist() for row in fitted.encode(held_out)]
    assert list(tmp_path.iterdir()) == []
