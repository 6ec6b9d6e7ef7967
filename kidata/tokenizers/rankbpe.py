"""A faster exact encoder for FAST's byte-level BPE: tiktoken ranks plus a pre-applied merge chain.

Why: Hugging Face ``tokenizers`` spends ~0.5 ms on one (50, 14) FAST chunk, which is one long
pre-tokenizer piece of ~1400 bytes. tiktoken runs the same vocabulary by ranks (token id = rank)
about 2.5x faster, but its merge loop is quadratic in the piece length, and FAST pieces are long
because zero coefficients repeat.

What: FAST vocabularies start with a chain of merges on the most common symbol (the zero
coefficient): its two UTF-8 bytes, then doubling runs (ZZ, ZZZZ, ...). Those merges have the lowest
ranks, so both BPE algorithms apply them before anything else, left to right and greedily; so we
apply them up front with ``bytes.replace``, writing each chain token as one spare byte that valid
UTF-8 input never contains, and give tiktoken the vocabulary rewritten the same way. The pieces it
sees are about half as long.

Exactness: tiktoken merges any adjacent pair whose concatenation is a token, Hugging Face only
listed merges; they agree on the vocabularies FAST fits produce but not on every conceivable one.
``RankedBpe.build`` refuses layouts it cannot run, and ``FastTokenizer`` compares both encoders on
probe chunks before it uses this one (tests compare them on thousands more).
"""

from __future__ import annotations

from typing import Any

from kidata.tokenizers import bytelevel


def _layout_blocker(spec: dict[str, Any]) -> str | None:
    """Why this tokenizer.json cannot be run by ranks with identical results, or None."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return "model is not BPE"
    if spec.get("normalizer") is not None:
        return "tokenizer has a normalizer"
    if spec.get("added_tokens"):
        return "tokenizer has added tokens"
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel":
        return "pre-tokenizer is not ByteLevel"
    if pre.get("add_prefix_space"):
        return "pre-tokenizer adds a prefix space"
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        return "BPE uses dropout or word affixes"
    vocab: dict[str, int] = model["vocab"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    merged_ids = [vocab.get(left + right) for left, right in merges]
    if None in merged_ids:
        return "a merge produces a token missing from the vocabulary"
    if any(b <= a for a, b in zip(merged_ids, merged_ids[1:])):
        return "merge order and token ids disagree"
    base_ids = [index for token, index in vocab.items() if len(bytelevel.token_bytes(token)) == 1]
    if merged_ids and base_ids and max(base_ids) >= merged_ids[0]:
        return "base symbols are not ranked below merges"
    if len(base_ids) + len(merged_ids) != len(vocab):
        return "vocabulary holds entries that are neither bytes nor merges"
    return None


def _merge_chain(ranks: dict[bytes, int], spare: list[int]) -> list[tuple[bytes, bytes]]:
    """(pattern, replacement) steps for the leading merges that can be applied up front.

    The lowest-ranked merge joins two bytes (the zero coefficient's two UTF-8 bytes, or two zero
    codes where zero is one byte); both BPE algorithms apply it first, leftmost occurrence first,
    which is what ``bytes.replace`` does, overlapping runs included. Each next rank that doubles
    the previous token is the same greedy pairing of a run. The chain stops at the first merge of
    another shape.
    """
    by_rank = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    if not by_rank or not spare:
        return []
    first_rank, first = by_rank[0]
    if len(first) != 2:
        return []
    steps = [(first, bytes([spare[0]]))]
    previous = first
    for (rank, token), byte in zip(by_rank[1:], spare[1:]):
        if rank != first_rank + len(steps) or token != previous + previous:
            break
        symbol = steps[-1][1]
        steps.append((symbol + symbol, bytes([byte])))
        previous = token
    return steps


class RankedBpe:
    """Encodes one FAST coefficient string to ids with tiktoken, exactly as the BPE would."""

    def __init__(self, encoding: Any, chain: list[tuple[bytes, bytes]], *, split: bool = True) -> None:
        import regex

        self._encoding = encoding
        self._chain = chain
        # Without the GPT-2 split (what kidata fits write) a chunk's string is a single piece.
        self._split = regex.compile(bytelevel.GPT2_SPLIT_PATTERN).findall if split else lambda text: [text]

    @classmethod
    def build(cls, spec: dict[str, Any], max_code_point: int) -> tuple["RankedBpe | None", str | None]:
        """The encoder for a tokenizer.json, or (None, reason) when its layout does not allow one."""
        reason = _layout_blocker(spec)
        if reason is not None:
            return None, reason
        import tiktoken

        ranks = {bytelevel.token_bytes(t): i for t, i in spec["model"]["vocab"].items()}
        reachable = set(bytelevel.reachable_bytes(max_code_point))
        spare = [b for b in range(255, -1, -1) if b not in reachable]
        chain = _merge_chain(ranks, spare)
        rewritten: dict[bytes, int] = {}
        for token, rank in ranks.items():
            if not set(token) <= reachable:  # spare bytes included
                continue  # holds a byte valid input never has: no input can produce it
            for pattern, replacement in chain:
                token = token.replace(pattern, replacement)
            if token in rewritten:
                return None, "vocabulary collides after rewriting the merge chain"
            rewritten[token] = rank
        # Each chain token rewrites to its single spare byte, so it keeps its own rank.
        encoding = tiktoken.Encoding(
            "kidata-fast", pat_str=bytelevel.GPT2_SPLIT_PATTERN, mergeable_ranks=rewritten,
            special_tokens={},
        )
        return cls(encoding, chain, split=spec["pre_tokenizer"].get("use_regex", True)), None

    @property
    def chain_length(self) -> int:
        return len(self._chain)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split(text):
            data = piece.encode("utf-8")
            for pattern, replacement in self._chain:
                data = data.replace(pattern, replacement)
            ids.extend(self._encoding._encode_single_piece(data))
        return ids
