"""Tokenizers on the Hugging Face hub: ``kidata fast push`` uploads one (a repo id is accepted
wherever a tokenizer folder is: ``kidata.locate`` fetches it into the hub cache)."""

from __future__ import annotations

from pathlib import Path


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
