"""Tokenizers on the Hugging Face hub: a repo id ("org/name") wherever a tokenizer folder is
accepted, fetched through ``huggingface_hub`` into its cache; ``kidata fast push`` uploads one."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def looks_like_hub_id(name: str | Path) -> bool:
    """"org/name": one slash, no path-like start, no file suffix, and no such local path."""
    text = str(name)
    if Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False
    org, repo = text.split("/")
    return bool(org and repo) and not Path(repo).suffix


def local_or_hub(name: str | Path, *, files: Sequence[str]) -> Path:
    """The local folder ``name``, or the snapshot of hub repo ``name`` holding ``files``; refuses
    in one sentence (the id, the reason, the cache it looked in) when neither is there."""
    if Path(name).exists() or not looks_like_hub_id(name):
        return Path(name)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise ImportError(f"{name!r} is not a local folder; fetching it from the hub needs huggingface_hub "
                          "(pip install 'kidata[model]')") from None
    try:
        return Path(snapshot_download(str(name), allow_patterns=list(files)))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, no access: one sentence
        raise FileNotFoundError(f"{name!r}: not a local folder, and the hub repo could not be fetched "
                                f"({type(error).__name__}: {' '.join(str(error).split())[:160]}); the hub cache looked in: "
                                f"{constants.HF_HUB_CACHE}") from None


def push(directory: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Uploads a saved tokenizer folder to hub repo ``repo_id`` (created if missing); returns its URL."""
    from huggingface_hub import HfApi

    directory = Path(directory)
    if not (directory / "processor_config.json").is_file() and not (directory / "kidata_bins.json").is_file():
        raise FileNotFoundError(f"{directory} is not a saved action tokenizer (no processor_config.json); "
                                "push what `kidata fast fit` wrote")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--repo {repo_id!r}: a hub repo id is org/name")
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(folder_path=str(directory), repo_id=repo_id, commit_message="kidata fast push")
    return f"https://huggingface.co/{repo_id}"
