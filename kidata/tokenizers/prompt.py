"""Samples: one token stream per training example, with the masks of knowledge insulation.

Robot samples (paper 5.1, appendix B), ``pi05`` format (openpi's pi0.5 prompt)::

    prefix  = BOS "Task: {instruction}, State: {state};\\nAction: "     ar 0, no loss
    postfix = FAST ids "|" EOS                                         ar 1, loss

``pi0fast`` format (openpi's pi0-FAST)::

    prefix  = BOS "Task: {instruction lower-cased}, State: {state};\\n"
    postfix = "Action: " FAST ids "|" EOS                               loss on all of it

``pi0`` format (openpi's pi0, for a model started from a pi0 checkpoint; continuous state only:
the state reaches the action expert as a vector, never the text)::

    prefix  = BOS "{instruction}" "\\n"     ("\\n" encoded alone: openpi's start-of-answer token)
    postfix = FAST ids "|" EOS      (with a subtask: "Subtask: {text};\\nAction: " FAST ids "|" EOS)

With a language target ("what the robot should do next", both formats)::

    prefix  = BOS "Task: {instruction}, State: {state};\\n"
    postfix = "Subtask: {text};\\nAction: " FAST ids "|" EOS            loss on all of it

The action expert attends to a sample's first ``expert_context_length`` tokens: the prefix, and
for a subtask row also its subtask text up to the action tokens. At inference the policy does what
pi0.5 does: it generates "Subtask: ...;\\nAction: " from ``subtask_prompt`` and then acts on it,
so the expert sees the same kind of context it was trained on.

State: ``text`` puts bins in the prompt; ``special`` replaces the bin text with one reserved
token per dimension; ``continuous`` drops ", State: ..." from the text and records
``state_slot`` = the prefix length (the model inserts the projected state there, at the end of
the prefix). Instructions are cleaned as openpi does (pi05: strip, "_" and newlines to spaces,
case kept, pi0 likewise; pi0fast: lower-case, strip, "_" to spaces).

VLM samples (PaliGemma): prefix = BOS + "caption en\\n" | "answer en {question}\\n" |
"point to {label}\\n" | "detect {label}\\n"; suffix = target + EOS with loss; ``<loc>`` tokens in
(y, x) order over 1024 bins. A sample longer than ``max_tokens`` is rejected, never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from kidata.choices import PromptFormat
from kidata.config import choices
from kidata.schema import Sample
from kidata.tokenizers.ranges import ActionIdMap, TokenRange, check_ranges
from kidata.tokenizers.state import STATE_ENCODINGS, SpecialStateTokens, discretize_state, state_text
from kidata.tokenizers.text import TextTokenizer

if TYPE_CHECKING:
    from kidata.manifest import Manifest
    from kidata.recipe import MixtureConfig

PROMPT_FORMATS = choices(PromptFormat)
LOC_BINS = 1024


class SampleRejected(ValueError):
    """A sample that cannot be built as asked (e.g. too long); ``reason`` is the count key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def clean_instruction(text: str, prompt_format: str) -> str:
    if prompt_format in ("pi05", "pi0"):
        return text.strip().replace("_", " ").replace("\n", " ")
    return text.lower().strip().replace("_", " ")


def loc_bin(value: float) -> int:
    """Bin of a coordinate normalized to [0, 1] over the (padded) image: floor(v * 1024), clipped."""
    return int(np.clip(np.floor(value * LOC_BINS), 0, LOC_BINS - 1))


def expert_context_length(meta: Mapping[str, Any]) -> int:
    """Leading tokens of a sample that the action expert attends to, from its ``meta.json``
    (``prefix_length``, ``fast_span``, ``subtask``) or an explicit ``expert_context``: the prefix,
    and for a subtask row everything before its action tokens (the subtask text and "Action: "),
    never the action tokens themselves."""
    if "expert_context" in meta:
        return int(meta["expert_context"])
    if meta.get("subtask") and meta.get("fast_span"):
        return int(meta["fast_span"][0])
    return int(meta["prefix_length"])


@dataclass
class EncodingStats:
    """Counts an encoder accumulates: clipped state values, rejected samples by reason."""

    clipped_state_values: int = 0
    clipped_action_chunks: int = 0


class SampleEncoder:
    """Builds Samples for one mixture's settings; refuses token-range collisions up front.

    ``action_tokenizer`` is a FastTokenizer or a BinTokenizer (the paper's naive-token ablation);
    either maps into the text vocabulary through ``id_map``.
    """

    def __init__(
        self,
        text: TextTokenizer,
        action_tokenizer: Any,
        *,
        prompt_format: str = "pi05",
        state_encoding: str = "text",
        max_tokens: int = 256,
        id_map: ActionIdMap | None = None,
        special_state_first: int | None = None,
        uses_loc_tokens: bool = False,
    ) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
        if state_encoding not in STATE_ENCODINGS:
            raise ValueError(f"state_encoding must be one of {STATE_ENCODINGS}, got {state_encoding!r}")
        if prompt_format == "pi0" and state_encoding != "continuous":
            raise ValueError(f"prompt_format 'pi0' gives the state to the action expert as a vector, state_encoding "
                             f"{state_encoding!r} writes it into the prompt: set state_encoding = \"continuous\"")
        self.text = text
        self.actions = action_tokenizer
        self.prompt_format = prompt_format
        self.state_encoding = state_encoding
        self.max_tokens = max_tokens
        self.id_map = id_map or ActionIdMap(text.vocab_size, action_tokenizer.vocab_size)
        if self.id_map.action_vocab_size < action_tokenizer.vocab_size:
            raise ValueError("the id map covers fewer ids than the action tokenizer emits")
        ranges = [self.id_map.range]
        self.special_state = None
        if state_encoding == "special":
            first = special_state_first if special_state_first is not None else self.id_map.range.first - 256
            self.special_state = SpecialStateTokens(first)
            ranges.append(self.special_state.range)
        for label, token in (("BOS", text.bos_id), ("EOS", text.eos_id), ("PAD", text.pad_id),
                             ("<image>", text.image_id)):
            if token is not None and token >= 0:
                ranges.append(TokenRange(f"the {label} token", token, token))
        if uses_loc_tokens:
            loc = text.loc_range()
            if loc is None:
                raise ValueError(f"{text.source} has no contiguous <loc0000>..<loc1023> tokens")
            ranges.append(TokenRange("<loc> tokens of the VLM tasks", *loc))
        check_ranges(ranges, text_vocab_size=text.vocab_size, action_vocab_size=self.id_map.action_vocab_size)
        self.stats = EncodingStats()
        self._bar_eos = text.encode("|", add_eos=True)

    @classmethod
    def from_settings(cls, text: TextTokenizer, action_tokenizer: Any, mixture: MixtureConfig, *,
                      uses_loc_tokens: bool = False) -> "SampleEncoder":
        """The encoder of a recipe's ``[mixture]`` settings."""
        id_map = ActionIdMap(text.vocab_size, action_tokenizer.vocab_size, rule=mixture.fast_token_rule,
                             skip=mixture.fast_token_skip, offset=mixture.fast_token_offset)
        return cls(text, action_tokenizer, prompt_format=mixture.prompt_format,
                   state_encoding=mixture.state_encoding, max_tokens=mixture.max_tokens, id_map=id_map,
                   special_state_first=mixture.special_state_first, uses_loc_tokens=uses_loc_tokens)

    @classmethod
    def from_manifest(cls, manifest: Manifest, action_tokenizer_dir: str | Path) -> "SampleEncoder":
        """The encoder a build used, from its manifest and action tokenizer folder (a run's
        ``fast_tokenizer/``): what inference and evaluation need, without the build. Both
        tokenizers must be the ones the build recorded (sha256), or nothing is encoded."""
        from kidata.manifest import ManifestMismatch
        from kidata.tokenizers import load_action_tokenizer

        text = TextTokenizer.load(manifest.recipe.mixture.text_tokenizer)
        actions = load_action_tokenizer(action_tokenizer_dir)
        for label, loaded, recorded, where in (
                ("text tokenizer", text.sha256, manifest.text_tokenizer.sha256, text.source),
                ("action tokenizer", actions.sha256, manifest.action_tokenizer.sha256, str(action_tokenizer_dir))):
            if loaded != recorded:
                raise ManifestMismatch(f"{label} {where} has sha256 {loaded[:12]}, the build used {recorded[:12]}: "
                                       "point the mixture's tokenizer at the files the build used")
        return cls.from_settings(text, actions, manifest.recipe.mixture)

    @property
    def ranges(self) -> dict[str, list[int]]:
        """Ranges this encoder emits into (for the manifest)."""
        out = {"fast_token_range": self.id_map.range.as_list()}
        if self.special_state is not None:
            out["special_state_range"] = self.special_state.range.as_list()
        return out

    # ------------------------------------------------------------------ robot
    def robot(
        self,
        instruction: str,
        state: np.ndarray,
        chunk: np.ndarray,
        action_valid: np.ndarray,
        *,
        subtask: str | None = None,
        images: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        action_ids: np.ndarray | None = None,
    ) -> Sample:
        """state: normalized float [S]; chunk: normalized float [H, A]; action_valid: bool [H];
        action_ids: the chunk's ids from ``action_ids_batch`` when an episode's chunks were
        tokenized together."""
        task = clean_instruction(instruction, self.prompt_format)
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        prefix, state_slot = self._robot_prefix(task, state, action_part=self.prompt_format == "pi05" and subtask is None)
        postfix: list[int] = []
        if subtask is not None:
            postfix += self.text.encode(f"Subtask: {clean_instruction(subtask, self.prompt_format)};\nAction: ")
        elif self.prompt_format == "pi0fast":
            postfix += self.text.encode("Action: ")
        action_ids = self._action_ids(chunk) if action_ids is None else action_ids
        fast_start = len(prefix) + len(postfix)
        postfix += action_ids.tolist() + self._bar_eos
        return self._assemble(
            "robot", prefix, postfix, has_actions=True, fast_span=(fast_start, fast_start + len(action_ids)),
            state=state, state_slot=state_slot, actions=np.asarray(chunk, dtype=np.float32),
            action_valid=np.asarray(action_valid, dtype=bool), images=images,
            meta={"instruction": task, **({"subtask": subtask} if subtask else {}), **(meta or {})},
        )

    def robot_prompt(self, instruction: str, state: np.ndarray, *, images: dict[str, Any] | None = None) -> Sample:
        """The model input at inference: a robot sample's prompt without targets (pi0-FAST's
        "Action: " follows as a causal token run, as in training)."""
        task = clean_instruction(instruction, self.prompt_format)
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        prefix, state_slot = self._robot_prefix(task, state, action_part=self.prompt_format == "pi05")
        postfix = self.text.encode("Action: ") if self.prompt_format == "pi0fast" else []
        sample = self._assemble("robot", prefix, postfix, has_actions=True, state=state, state_slot=state_slot,
                                images=images, meta={"instruction": task})
        sample.loss[:] = False
        return sample

    def subtask_prompt(self, instruction: str, state: np.ndarray, *, subtask: str | Sequence[int] | None = None,
                       images: dict[str, Any] | None = None) -> Sample:
        """The model input at inference for a source trained with subtasks (pi0.5: generate the
        subtask, then act). Without ``subtask``: the subtask row's prefix, from which the model
        generates "Subtask: ...;\\nAction: ". With it (the text, or the ids the model generated up
        to its first action token): that prefix followed by the subtask part as causal tokens,
        ``meta["expert_context"]`` = the whole length, as a training subtask row gives the expert."""
        task = clean_instruction(instruction, self.prompt_format)
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        prefix, state_slot = self._robot_prefix(task, state, action_part=False)
        if subtask is None:
            postfix: list[int] = []
        elif isinstance(subtask, str):
            postfix = self.text.encode(f"Subtask: {clean_instruction(subtask, self.prompt_format)};\nAction: ")
        else:
            postfix = [int(token) for token in subtask]
        sample = self._assemble("robot", prefix, postfix, has_actions=True, state=state, state_slot=state_slot,
                                images=images, meta={"instruction": task, "expert_context": len(prefix) + len(postfix)})
        sample.loss[:] = False
        return sample

    def subtask_of(self, generated: Sequence[int]) -> str:
        """The subtask text in ids generated from ``subtask_prompt`` (up to the first stop or
        action id): what stands between "Subtask: " and ";\\nAction:", re-encoded by
        ``subtask_prompt`` exactly as the build encodes it. An unfinished one is returned as far
        as it goes."""
        token_range, stops = self.id_map.range, set(self.stop_ids)
        end = next((i for i, token in enumerate(generated)
                    if token in stops or token_range.first <= token <= token_range.last), len(generated))
        text = self.text.decode(list(generated[:end]))
        text = text.split(";\nAction:")[0]
        return text.split("Subtask:", 1)[1].strip() if "Subtask:" in text else text.strip()

    def _robot_prefix(self, task: str, state: np.ndarray, *, action_part: bool) -> tuple[list[int], int | None]:
        if self.prompt_format == "pi0":  # the task alone, then "\n" as its own encode call, as openpi's pi0 does
            prefix = self.text.encode(task, add_bos=True) + self.text.encode("\n")
            return prefix, len(prefix)
        tail = ";\nAction: " if action_part else ";\n"
        if self.state_encoding == "text":
            text, clipped = state_text(state)
            self.stats.clipped_state_values += clipped
            return self.text.encode(f"Task: {task}, State: {text}{tail}", add_bos=True), None
        if self.state_encoding == "special":
            ids, clipped = self.special_state.ids(state)
            self.stats.clipped_state_values += clipped
            prefix = self.text.encode(f"Task: {task}, State: ", add_bos=True) + ids + self.text.encode(tail)
            return prefix, None
        prefix = self.text.encode(f"Task: {task}{tail}", add_bos=True)
        return prefix, len(prefix)

    def action_ids_batch(self, chunks: np.ndarray) -> list[np.ndarray]:
        """Text-vocabulary action ids of each normalized chunk of ``chunks`` [N, H, A]: one DCT and
        one batched BPE call for an episode instead of one per step. A batch with clipping is
        redone chunk by chunk, so that ``stats.clipped_action_chunks`` counts chunks."""
        import warnings

        from kidata.tokenizers.base import ClipWarning

        chunks = np.asarray(chunks)
        if len(chunks) == 0:
            return []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ClipWarning)
            ids = self.actions.encode(chunks)
        if caught and len(chunks) > 1:
            return [self.action_ids_batch(chunk[None])[0] for chunk in chunks]
        self.stats.clipped_action_chunks += bool(caught)
        return [self.id_map.to_text(row) for row in ids]

    def _action_ids(self, chunk: np.ndarray) -> np.ndarray:
        return self.action_ids_batch(np.asarray(chunk)[None])[0]

    # ------------------------------------------------------------------ VLM
    def caption(self, caption: str, **kwargs: Any) -> Sample:
        return self._vlm("caption", "caption en\n", self.text.encode(caption), **kwargs)

    def vqa(self, question: str, answer: str, **kwargs: Any) -> Sample:
        return self._vlm("vqa", f"answer en {question}\n", self.text.encode(answer), **kwargs)

    def point(self, label: str, points: Sequence[tuple[float, float]], **kwargs: Any) -> Sample:
        """points: (y, x) normalized to [0, 1]; target "<locY><locX> label ; ..."."""
        target = self._joined([[loc_bin(y), loc_bin(x)] for y, x in points], [label] * len(points))
        return self._vlm("point", f"point to {label}\n", target, **kwargs)

    def detect(self, label: str, boxes: Sequence[tuple[float, float, float, float]], labels: Sequence[str] | None = None,
               **kwargs: Any) -> Sample:
        """boxes: (ymin, xmin, ymax, xmax) normalized to [0, 1]; target "<loc>x4 label ; ..."."""
        bins = [[loc_bin(v) for v in box] for box in boxes]
        target = self._joined(bins, list(labels) if labels is not None else [label] * len(boxes))
        return self._vlm("detect", f"detect {label}\n", target, **kwargs)

    def _joined(self, loc_groups: list[list[int]], labels: list[str]) -> list[int]:
        ids: list[int] = []
        for index, (group, label) in enumerate(zip(loc_groups, labels)):
            if index:
                ids += self.text.encode(" ; ")
            ids += [self.text.loc_id(b) for b in group] + self.text.encode(f" {label}")
        return ids

    def _vlm(self, kind: str, prompt: str, target: list[int], *, images: dict | None = None,
             meta: dict | None = None) -> Sample:
        prefix = self.text.encode(prompt, add_bos=True)
        return self._assemble(kind, prefix, target + [self.text.eos_id], images=images, meta=meta)

    # ------------------------------------------------------------------ common
    def _assemble(self, kind: str, prefix: list[int], postfix: list[int], **fields: Any) -> Sample:
        length = len(prefix) + len(postfix)
        if length > self.max_tokens:
            raise SampleRejected("too_long", f"{kind} sample of {length} tokens exceeds max_tokens {self.max_tokens}")
        tokens = np.asarray(prefix + postfix, dtype=np.int32)
        ar = np.zeros(length, dtype=bool)
        ar[len(prefix):] = True
        images = fields.pop("images", None) or {}
        meta = fields.pop("meta", None) or {}
        return Sample(kind=kind, tokens=tokens, ar=ar, loss=ar.copy(), prefix_length=len(prefix),
                      images=images, meta=meta, **fields)

    # ------------------------------------------------------------------ reading back
    def action_tokens_of(self, sample: Sample) -> np.ndarray:
        """The action tokenizer's ids of a sample's FAST span (rejects ids outside the range)."""
        if sample.fast_span is None:
            raise ValueError("sample has no action tokens")
        start, stop = sample.fast_span
        return self.id_map.to_action(sample.tokens[start:stop])

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Token ids that end generation: EOS and the "|" that closes an action span."""
        return tuple(i for i in (self.text.eos_id, *self.text.encode("|")) if i is not None)

    def decode_generated_actions(self, generated: Sequence[np.ndarray] | np.ndarray, *, horizon: int,
                                 dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Actions float64 [B, horizon, dim] and ok bool [B] from greedily generated token rows:
        each row's leading run of ids in the action range (the pi0-FAST output) mapped back and
        decoded; a row that starts with no action id is not ok."""
        token_range = self.id_map.range
        rows = []
        for tokens in generated:
            tokens = np.asarray(tokens)
            inside = (tokens >= token_range.first) & (tokens <= token_range.last)
            stop = len(tokens) if inside.all() else int(np.argmin(inside))
            rows.append(self.id_map.to_action(tokens[:stop]))
        decoded, ok = self.actions.decode(rows, horizon=horizon, dim=dim)
        return decoded, ok & np.array([len(row) > 0 for row in rows])

    def state_bins(self, sample: Sample) -> np.ndarray | None:
        return None if sample.state is None else discretize_state(sample.state)[0]
