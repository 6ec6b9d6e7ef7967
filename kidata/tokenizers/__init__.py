"""Tokenizers that turn actions (FAST, naive bins), state and text into token ids."""

from kidata.tokenizers.base import ActionTokenizer, ClipWarning, DecodeError
from kidata.tokenizers.bins import BinTokenizer
from kidata.tokenizers.fast import FastTokenizer

__all__ = ["ActionTokenizer", "BinTokenizer", "ClipWarning", "DecodeError", "FastTokenizer", "load_action_tokenizer",
           "action_tokenizer_kind"]


def action_tokenizer_kind(tokenizer) -> str:
    """``fast`` or ``bins``: the discrete action objective a tokenizer gives (model ``action_tokens``)."""
    return "bins" if isinstance(tokenizer, BinTokenizer) else "fast"


def load_action_tokenizer(path):
    """The action tokenizer saved in a directory: naive bins when ``kidata_bins.json`` is there,
    else FAST."""
    from pathlib import Path

    from kidata.tokenizers.bins import BINS_FILE

    return BinTokenizer.load(path) if (Path(path) / BINS_FILE).exists() else FastTokenizer.load(path)
