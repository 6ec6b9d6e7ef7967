"""kidata.locate: a local path, a shipped asset, an fsspec URL or a hub id becomes a local file or
folder, and a reference found nowhere is one sentence naming each place tried."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import fsspec
import pytest

from kidata import assets
from kidata.locate import NotFound, download_cache, locate, looks_like_hub_id


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The download cache in a folder of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "kidata" / "downloads"


@pytest.fixture
def memory():
    """A memory:// folder of the test's own, removed afterwards (the filesystem is process-wide)."""
    fs = fsspec.filesystem("memory")
    root = f"/locate-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def hub_cache(root, repo_id, files, *, repo_type="model", commit="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face hub cache holding one snapshot of ``repo_id``, laid out as huggingface_hub
    writes it: ``<type>s--org--name/refs/main`` names the commit, ``snapshots/<commit>/`` holds the files."""
    repo = root / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, hub_offline):
    """huggingface_hub offline, its cache in a folder of the test's own."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


# ----------------------------------------------------------------------------- each kind resolves
def test_a_relative_path_resolves_against_the_base_folder_given(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "toks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate("toks", base=tmp_path / "recipes") == tmp_path / "recipes" / "toks"
    assert locate("recipes/toks") == Path("recipes/toks")  # as given, relative to the working folder


def test_a_local_path_wins_over_the_shipped_asset_of_the_same_name(tmp_path, monkeypatch):
    (tmp_path / "tokenizers" / "demo-text").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate("tokenizers/demo-text").resolve() == tmp_path / "tokenizers" / "demo-text"


def test_a_shipped_asset_resolves_by_its_relative_name_or_a_bare_name_of_its_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate("tokenizers/demo-text") == assets.ROOT / "tokenizers" / "demo-text"
    assert locate("demo-text", kind="tokenizers") == assets.ROOT / "tokenizers" / "demo-text"
    assert locate("ki_tiny", kind="model", accept=("path", "asset")) == assets.ROOT / "model" / "ki_tiny.toml"


def test_a_memory_url_folder_is_copied_once_into_the_download_cache_under_its_own_name(cache, memory):
    fs, root = memory
    fs.pipe({f"{root}/ckpt/config.json": b"{}", f"{root}/ckpt/shards/a.safetensors": b"abc"})
    found = locate(f"memory://{root}/ckpt")
    assert found.name == "ckpt" and found.parent.parent == cache == download_cache()
    assert sorted(p.relative_to(found).as_posix() for p in found.rglob("*") if p.is_file()) == [
        "config.json", "shards/a.safetensors"]
    fs.rm(f"{root}/ckpt", recursive=True)  # the second look is the cached copy, the URL is not read again
    assert locate(f"memory://{root}/ckpt") == found
    assert [p.name for p in cache.iterdir()] == [found.parent.name]  # no temporary folder left


def test_a_memory_url_file_is_copied_under_its_own_name(cache, memory):
    fs, root = memory
    fs.pipe(f"{root}/model.safetensors", b"weights")
    found = locate(f"memory://{root}/model.safetensors")
    assert found.name == "model.safetensors" and found.read_bytes() == b"weights"


def test_a_file_url_is_its_local_path(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    assert locate(f"file://{tmp_path}/tokenizer.model") == tmp_path / "tokenizer.model"


def test_a_hub_id_is_a_snapshot_fetched_with_the_repo_type_revision_and_files_asked_for(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **options):
        calls.append((repo_id, options))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert locate("lerobot/aloha_sim", accept=("hub",), repo_type="dataset", revision="v3.0",
                  hub_files=("meta/*",)) == tmp_path
    assert locate("my-org/fast") == tmp_path
    assert calls == [("lerobot/aloha_sim", {"allow_patterns": ["meta/*"], "repo_type": "dataset", "revision": "v3.0"}),
                     ("my-org/fast", {})]


def test_a_hub_id_resolves_offline_from_the_local_hub_cache(offline_hub):
    snapshot = hub_cache(offline_hub, "my-org/my-text", {"tokenizer.json": "{}"})
    assert locate("my-org/my-text", hub_files=("tokenizer.json",)) == snapshot


def test_a_checkpoint_at_a_url_is_read_from_its_local_copy(cache, memory):
    from kidata.model.weights import config_from_paligemma

    fs, root = memory
    config = {"vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
              "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 2048}}
    fs.pipe(f"{root}/paligemma/config.json", json.dumps(config).encode())
    model = config_from_paligemma(f"memory://{root}/paligemma", action_dim=8, action_horizon=4, expert_width=32,
                                  expert_mlp=64, state_dim=8)
    assert (model.width, model.depth, model.vision_width, model.vocab_size) == (64, 2, 32, 2048)


def test_a_lerobot_repo_id_is_fetched_as_a_dataset_at_its_revision(tmp_path, monkeypatch):
    import huggingface_hub

    from kidata.sources.lerobot import resolve_root

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **options: calls.append((repo_id, options)) or str(tmp_path))
    assert resolve_root(None, "lerobot/aloha_sim", "v3.0") == tmp_path
    assert calls == [("lerobot/aloha_sim", {"repo_type": "dataset", "revision": "v3.0"})]


# ------------------------------------------------------------------ a missing thing: one sentence
def one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_missing_path_names_where_it_looked_and_what_ships_of_its_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound) as error:
        locate("tokenizers/mine", what="text tokenizer", accept=("path", "asset"))
    assert one_sentence(error) == (f"text tokenizer 'tokenizers/mine': {tmp_path}/tokenizers/mine does not exist; no "
                                   f"shipped asset of that name (shipped tokenizers, in {assets.ROOT}: "
                                   f"{assets.listing()['tokenizers']})")


def test_a_missing_path_is_not_looked_for_on_the_hub_when_it_cannot_be_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound) as error:
        locate("./toks/mine.json", what="text tokenizer", accept=("path", "hub"), advice="give a folder")
    assert one_sentence(error) == (f"text tokenizer './toks/mine.json': {tmp_path}/toks/mine.json does not exist; "
                                   "not a Hugging Face hub id (org/name); give a folder")


def test_a_missing_memory_url_is_named_with_its_filesystem(cache, memory):
    _, root = memory
    with pytest.raises(NotFound) as error:
        locate(f"memory://{root}/absent", what="checkpoint")
    assert one_sentence(error) == (f"checkpoint 'memory://{root}/absent': nothing at the URL (MemoryFileSystem has "
                                   f"no {root}/absent)")


def test_a_url_where_only_local_paths_are_accepted_is_refused(tmp_path):
    with pytest.raises(NotFound) as error:
        locate("s3://bucket/lerobot", what="LeRobot dataset folder", accept=("path",))
    assert one_sentence(error) == "LeRobot dataset folder 's3://bucket/lerobot': a URL is not accepted here"


def test_an_unreachable_hub_id_names_the_repo_revision_and_the_cache_it_looked_in(offline_hub):
    with pytest.raises(NotFound) as error:
        locate("lerobot/absent", what="LeRobot dataset repo_id", accept=("hub",), repo_type="dataset", revision="v3.0")
    assert re.fullmatch(r"LeRobot dataset repo_id 'lerobot/absent': the Hugging Face dataset repo at revision v3\.0 "
                        r"is not in the hub cache and could not be fetched \(\w+: .{1,160}\); the hub cache looked "
                        + re.escape(f"in: {offline_hub}"), one_sentence(error))


def test_an_interrupted_download_leaves_no_cache_entry(cache, memory, monkeypatch):
    fs, root = memory
    fs.pipe(f"{root}/ckpt/config.json", b"{}")

    def get(*args, **kwargs):
        raise ConnectionError("connection reset")

    with monkeypatch.context() as patch:
        patch.setattr(type(fs), "get", get)
        with pytest.raises(NotFound) as error:
            locate(f"memory://{root}/ckpt", what="checkpoint")
    assert one_sentence(error).endswith("the URL could not be read (ConnectionError: connection reset)")
    assert list(cache.iterdir()) == []
    assert (locate(f"memory://{root}/ckpt") / "config.json").read_text() == "{}"


@pytest.mark.parametrize("reference, expected", [
    ("google/paligemma-3b-pt-224", True), ("Qwen/Qwen2.5-0.5B", True), ("gpt2", True),
    ("./toks/mine", False), ("a/b/c", False), ("~/tok", False), ("org/tokenizer.json", False), ("org/a--b", False)])
def test_a_hub_id_is_org_slash_name_and_not_a_path_or_a_file_name(reference, expected):
    assert looks_like_hub_id(reference) is expected
