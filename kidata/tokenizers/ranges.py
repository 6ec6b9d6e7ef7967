"""Where action and state tokens live inside the text vocabulary, and refusing overlaps.

FAST (or naive-bin) ids map into the VLM vocabulary by a rule. The default is openpi's:
text id = vocab_size - 1 - skip - t with skip = 128, which on PaliGemma (and on our demo
tokenizer) lands on the ``<loc>`` tokens just below the 128 ``<seg>`` tokens. The ``offset`` rule
maps t to first + t instead; an offset at or past the text vocabulary appends the action ids after
it (the model's ``vocab_size`` must then cover them: ``Encoding.token_vocab_size``), for mixtures
whose VLM tasks use every text id, <loc> tokens included. Whatever the rule, the range used is computed from the action
tokenizer's vocabulary size, recorded, and checked against every other range the mixture uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from kidata.choices import ActionIdRule
from kidata.config import choices

ACTION_ID_RULES = choices(ActionIdRule)


class RangeCollision(ValueError):
    """Two token ranges of one mixture overlap."""


@dataclass(frozen=True)
class TokenRange:
    """Inclusive id range [first, last] with a name for messages."""

    name: str
    first: int
    last: int

    def overlaps(self, other: "TokenRange") -> bool:
        return self.first <= other.last and other.first <= self.last

    def as_list(self) -> list[int]:
        return [self.first, self.last]


@dataclass(frozen=True)
class ActionIdMap:
    """Maps action-tokenizer ids t in [0, action_vocab) to text ids and back."""

    text_vocab_size: int
    action_vocab_size: int
    rule: ActionIdRule = "openpi"
    skip: int = 128
    offset: int = 0

    def __post_init__(self) -> None:
        if self.rule not in ACTION_ID_RULES:
            raise ValueError(f"action id rule must be 'openpi' or 'offset', got {self.rule!r}")
        token_range = self.range
        appended = self.rule == "offset" and self.offset >= self.text_vocab_size
        if token_range.first < 0 or (token_range.last >= self.text_vocab_size and not appended):
            raise RangeCollision(
                f"{self.action_vocab_size} action tokens do not fit the {self.text_vocab_size}-token text "
                f"vocabulary with rule {self.rule!r} (range {token_range.as_list()})"
            )

    @property
    def range(self) -> TokenRange:
        if self.rule == "openpi":
            top = self.text_vocab_size - 1 - self.skip
            return TokenRange("action tokens", top - (self.action_vocab_size - 1), top)
        return TokenRange("action tokens", self.offset, self.offset + self.action_vocab_size - 1)

    def to_text(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.action_vocab_size):
            raise ValueError(f"action ids outside [0, {self.action_vocab_size})")
        mapped = self.text_vocab_size - 1 - self.skip - ids if self.rule == "openpi" else self.offset + ids
        return mapped.astype(np.int32)

    def to_action(self, text_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Inverse map; ids outside the action range are rejected (ValueError naming them)."""
        text_ids = np.asarray(text_ids, dtype=np.int64)
        token_range = self.range
        outside = (text_ids < token_range.first) | (text_ids > token_range.last)
        if outside.any():
            raise ValueError(f"ids {text_ids[outside][:5].tolist()} lie outside the action range {token_range.as_list()}")
        ids = self.text_vocab_size - 1 - self.skip - text_ids if self.rule == "openpi" else text_ids - self.offset
        return ids.astype(np.int32)


def check_ranges(ranges: Iterable[TokenRange], *, text_vocab_size: int | None = None,
                 action_vocab_size: int | None = None) -> None:
    """Raises RangeCollision naming the first two overlapping ranges and the fix that always works:
    appending the action ids after the text vocabulary (which no text, ``<loc>`` or state token uses),
    with the model vocabulary that then covers them."""
    ranges = list(ranges)
    for index, first in enumerate(ranges):
        for second in ranges[index + 1 :]:
            if first.overlaps(second):
                fix = ("append the action tokens after the text vocabulary: [mixture] fast_token_rule = \"offset\" "
                       f"and fast_token_offset = {text_vocab_size}, then train with --model.vocab_size "
                       f"{text_vocab_size + action_vocab_size} (text + action ids)"
                       if text_vocab_size is not None and action_vocab_size is not None else
                       "append the action tokens after the text vocabulary ([mixture] fast_token_rule = \"offset\", "
                       "fast_token_offset = the text vocabulary size)")
                raise RangeCollision(
                    f"{first.name} {first.as_list()} overlap {second.name} {second.as_list()}: {fix}; or move them "
                    "elsewhere (fast_token_skip / fast_token_offset, special_state_first)")
