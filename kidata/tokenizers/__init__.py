"""Tokenizers that turn actions (FAST, naive bins), state and text into token ids."""

from __future__ import annotations

from pathlib import Path

from kidata.tokenizers.base import ActionTokenizer, ClipWarning, DecodeError
from kidata.tokenizers.bins import BinTokenizer
from kidata.tokenizers.fast import FastTokenizer

__all__ = ["ActionTokenizer", "BinTokenizer", "ClipWarning", "DecodeError", "FastTokenizer", "load_action_tokenizer",
           "action_tokenizer_kind", "action_tokenizer_files", "action_tokenizer_from_files", "ACTION_TOKENIZER_FILES"]

# the files that define an action tokenizer (FAST: the first three; naive bins: the last)
ACTION_TOKENIZER_FILES = ("processor_config.json", "tokenizer.json", "kidata_fast.json", "kidata_bins.json")


def action_tokenizer_kind(tokenizer) -> str:
    """``fast`` or ``bins``: the discrete action objective a tokenizer gives (model ``action_tokens``)."""
    return "bins" if isinstance(tokenizer, BinTokenizer) else "fast"


def load_action_tokenizer(path: str | Path, *, base: str | Path | None = None) -> ActionTokenizer:
    """The action tokenizer saved in a directory (a path, relative to ``base`` when given, a shipped
    asset, a URL or a hub id: ``kidata.locate``): naive bins when ``kidata_bins.json`` is there, else FAST."""
    from kidata.locate import locate
    from kidata.tokenizers.bins import BINS_FILE

    directory = locate(path, what="action tokenizer", base=base, kind="tokenizers",
                       hub_files=(*ACTION_TOKENIZER_FILES, "tokenizer_config.json"))
    return BinTokenizer.load(directory) if (directory / BINS_FILE).exists() else FastTokenizer.load(directory)


def action_tokenizer_files(fs, directory: str) -> dict[str, str]:
    """An action tokenizer's files (name -> text) from a folder of any fsspec filesystem: workers
    and remote outputs get the tokenizer by value, not by a path they may not see."""
    return {name: fs.cat_file(f"{directory}/{name}").decode()
            for name in ACTION_TOKENIZER_FILES if fs.exists(f"{directory}/{name}")}


def action_tokenizer_from_files(files: dict[str, str]):
    """The tokenizer those files define, loaded from a temporary local folder that is removed once
    loaded (both tokenizers read their files eagerly): every build unit calls this, and a kept
    folder per call had left about a thousand ``kidata-fast-*`` folders in ``/tmp`` of one VM."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kidata-fast-") as folder:
        directory = Path(folder)
        for name, text in files.items():
            (directory / name).write_text(text)
        return load_action_tokenizer(directory)
