"""The backbone's text tokenizer: PaliGemma's SentencePiece model, or any SentencePiece / tokenizer.json.

``TextTokenizer.load`` takes a local directory (holding ``tokenizer.model`` or ``tokenizer.json``),
a file, a shipped asset, a URL or a Hugging Face hub id such as ``google/paligemma-3b-pt-224``
(``kidata.locate``: downloaded with huggingface_hub when the user has access and a network;
nothing is downloaded in our CI, which uses ``tokenizers/demo-text``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

# PaliGemma's tokenizer (the one openpi's checkpoints were trained with): Gemma's 256000 pieces,
# then 1024 <locNNNN> and 128 <segNNN>; <pad>, <eos>, <bos>, <unk> are ids 0-3.
PALIGEMMA_VOCAB_SIZE = 257152
_PALIGEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")

# the files a text tokenizer folder may hold, the first one found read
_FILES = ("tokenizer.model", "tokenizer.json")
_BOS = ("<bos>", "<s>")
_EOS = ("<eos>", "</s>")
_PAD = ("<pad>",)


class TextTokenizer:
    """encode/decode text; BOS/EOS/PAD ids; lookup of ``<image>``, ``<locNNNN>``, ``<segNNN>``."""

    def __init__(self, model, kind: str, source: str, sha256: str) -> None:
        self._model = model
        self.kind = kind  # "sentencepiece" | "hf"
        self.source = source
        self.sha256 = sha256
        if kind == "sentencepiece":
            self.vocab_size = int(model.vocab_size())
            self.bos_id, self.eos_id, self.pad_id = int(model.bos_id()), int(model.eos_id()), int(model.pad_id())
        else:
            self.vocab_size = int(model.get_vocab_size(with_added_tokens=True))
            self.bos_id = self._first_id(_BOS)
            self.eos_id = self._first_id(_EOS)
            self.pad_id = self._first_id(_PAD)

    def _first_id(self, names: Sequence[str]) -> int:
        for name in names:
            index = self.piece_to_id(name)
            if index is not None:
                return index
        return -1

    @classmethod
    def load(cls, name_or_path: str | Path, *, base_dir: str | Path | None = None) -> "TextTokenizer":
        """A directory (holding ``tokenizer.model`` or ``tokenizer.json``) or a file: a local one
        (relative paths resolve against ``base_dir``), a shipped asset (``tokenizers/demo-text``), a
        URL or a hub id (``kidata.locate``)."""
        from kidata.locate import locate

        path = locate(name_or_path, what="text tokenizer", base=base_dir, kind="tokenizers", hub_files=_FILES,
                      advice="give a folder holding tokenizer.model or tokenizer.json, or a Hugging Face hub id "
                             "reachable from here")
        if path.is_dir():
            for candidate in _FILES:
                if (path / candidate).is_file():
                    return cls._from_file(path / candidate)
            raise FileNotFoundError(f"{path} holds neither tokenizer.model nor tokenizer.json")
        return cls._from_file(path)

    @classmethod
    def _from_file(cls, path: Path) -> "TextTokenizer":
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if path.suffix == ".model":
            import sentencepiece as spm

            return cls(spm.SentencePieceProcessor(model_proto=data), "sentencepiece", str(path), digest)
        if path.suffix == ".json":
            from tokenizers import Tokenizer

            return cls(Tokenizer.from_str(data.decode("utf-8")), "hf", str(path), digest)
        raise ValueError(f"{path}: expected a SentencePiece .model or a tokenizer.json")

    # ---------------------------------------------------------------- text
    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if self.kind == "sentencepiece":
            ids = list(self._model.encode(text))
        else:
            ids = list(self._model.encode(text, add_special_tokens=False).ids)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece":
            return self._model.decode(ids)
        return self._model.decode(ids, skip_special_tokens=False)

    def piece_to_id(self, piece: str) -> int | None:
        if self.kind == "sentencepiece":
            index = int(self._model.piece_to_id(piece))
            return None if index == self._model.unk_id() and piece != self._model.id_to_piece(index) else index
        return self._model.token_to_id(piece)

    def id_to_piece(self, index: int) -> str:
        if self.kind == "sentencepiece":
            return self._model.id_to_piece(int(index))
        return self._model.id_to_token(int(index)) or ""

    # ---------------------------------------------------------------- special tokens
    @property
    def image_id(self) -> int | None:
        return self.piece_to_id("<image>")

    def loc_id(self, index: int) -> int:
        found = self.piece_to_id(f"<loc{index:04d}>")
        if found is None:
            raise KeyError(f"{self.source} has no <loc{index:04d}> token")
        return found

    def loc_range(self) -> tuple[int, int] | None:
        """(first, last) ids of <loc0000>..<loc1023> when present and contiguous."""
        return self._contiguous([f"<loc{i:04d}>" for i in range(1024)])

    def seg_range(self) -> tuple[int, int] | None:
        return self._contiguous([f"<seg{i:03d}>" for i in range(128)])

    def _contiguous(self, pieces: list[str]) -> tuple[int, int] | None:
        ids = [self.piece_to_id(p) for p in pieces]
        if None in ids or ids != list(range(ids[0], ids[0] + len(ids))):
            return None
        return ids[0], ids[-1]


def paligemma_mismatch(tokenizer: TextTokenizer) -> str | None:
    """How ``tokenizer`` differs from PaliGemma's (None when it does not): its size first, then a
    fingerprint of its layout: <pad> <eos> <bos> <unk> at ids 0-3, <loc0000>..<loc1023> and
    <seg000>..<seg127> contiguous and last. A checkpoint's embedding rows mean these ids."""
    if tokenizer.vocab_size != PALIGEMMA_VOCAB_SIZE:
        return f"{tokenizer.vocab_size} ids, PaliGemma's has {PALIGEMMA_VOCAB_SIZE}"
    specials = [tokenizer.id_to_piece(index) for index in range(len(_PALIGEMMA_SPECIALS))]
    if tuple(specials) != _PALIGEMMA_SPECIALS:
        return f"ids 0-3 are {specials}, PaliGemma's are {list(_PALIGEMMA_SPECIALS)}"
    loc = (PALIGEMMA_VOCAB_SIZE - 1152, PALIGEMMA_VOCAB_SIZE - 129)
    seg = (PALIGEMMA_VOCAB_SIZE - 128, PALIGEMMA_VOCAB_SIZE - 1)
    if tokenizer.loc_range() != loc or tokenizer.seg_range() != seg:
        return (f"<loc>/<seg> ids are {tokenizer.loc_range()}/{tokenizer.seg_range()}, PaliGemma's are "
                f"{loc}/{seg}")
    return None

