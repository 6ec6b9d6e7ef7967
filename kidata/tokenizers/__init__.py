"""Tokenizers that turn actions (FAST, naive bins), state and text into token ids."""

from kidata.tokenizers.base import ActionTokenizer, ClipWarning, DecodeError
from kidata.tokenizers.bins import BinTokenizer
from kidata.tokenizers.fast import FastTokenizer

__all__ = ["ActionTokenizer", "BinTokenizer", "ClipWarning", "DecodeError", "FastTokenizer"]
