"""``OUT/manifest.json``, typed: the build's contract with the loader, trainer, policy and tools.

One writer (``Manifest.to_json``, called by the build) and one reader (``Manifest.read`` /
``Manifest.from_json``): a file that is not a manifest, or lacks a field, is refused in one
sentence naming the file and the field. Layout (JSON, keys sorted)::

    kidata_version, recipe (the canonical recipe; ``kidata.recipe.Recipe`` when read), recipe_sha256,
    tokenizers: {text: {path, sha256}, fast: {path, sha256, kind}},
    encoding: {state_encoding, prompt_format, action_horizon, action_dim, image_size, max_tokens,
               normalization, fast_token_rule, text_vocab_size, fast_token_range,
               special_state_range (special state only)},
    sources: [{name, kind, weight, reader, episodes, samples, quarantined, rejected, skipped,
               shards: [{path, sha256, samples, bytes, split}], norm_stats (robot only),
               delta_mask (robot sources with mapping.delta only)}]

A build's folder holds it beside the build report, the action tokenizer and the shards;
``BuildDir`` is the one place those names are spelled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from kidata.recipe import Recipe, RecordedRecipeError

MANIFEST_FILE = "manifest.json"
BUILD_REPORT_FILE = "build_report.json"
# FAST or naive bins; the folder keeps its first name (runs and builds read it)
ACTION_TOKENIZER_DIR = "fast_tokenizer"


class ManifestMismatch(ValueError):
    """A mixture that does not fit what reads it (another model, tokenizer or encoding), or a file
    that is not a kidata manifest."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the build's output root
    sha256: str
    samples: int
    bytes: int
    split: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenizerRef:
    path: str
    sha256: str
    kind: str | None = None  # the action tokenizer's: "fast" or "bins"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Encoding:
    """How every sample of the build was encoded; the model and policy must agree with it."""

    state_encoding: str
    prompt_format: str
    action_horizon: int
    action_dim: int
    image_size: int
    max_tokens: int
    normalization: str
    fast_token_rule: str
    text_vocab_size: int
    fast_token_range: tuple[int, int]
    special_state_range: tuple[int, int] | None = None

    @property
    def token_vocab_size(self) -> int:
        """Ids a model must embed: the text vocabulary, and action ids appended past it (the
        ``offset`` rule at or beyond the text vocabulary, when the text has no room for them)."""
        return max(self.text_vocab_size, self.fast_token_range[1] + 1)

    def to_json(self) -> dict:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if out["special_state_range"] is None:
            del out["special_state_range"]
        return out


@dataclass(frozen=True)
class SourceEntry:
    name: str
    kind: str  # "robot" or "vlm"
    weight: float
    reader: str
    episodes: int
    samples: int
    quarantined: Mapping[str, int]
    rejected: Mapping[str, int]
    skipped: Mapping[str, int]
    shards: tuple[ShardInfo, ...]
    norm_stats: Mapping[str, Any] | None = None  # NormStats.to_json(), robot sources only
    # the recipe's mapping.delta: these action dimensions (and their statistics) are relative to
    # the state; the policy adds the state back (kidata.delta). None: all absolute
    delta_mask: tuple[bool, ...] | None = None

    def split_shards(self, split: str) -> list[ShardInfo]:
        """This split's shards that hold samples."""
        return [shard for shard in self.shards if shard.split == split and shard.samples]

    def to_json(self) -> dict:
        out = {**asdict(self), "shards": [shard.to_json() for shard in self.shards]}
        if self.norm_stats is None:
            del out["norm_stats"]
        if self.delta_mask is None:
            del out["delta_mask"]
        else:
            out["delta_mask"] = list(self.delta_mask)
        return out


@dataclass(frozen=True)
class Manifest:
    kidata_version: str
    recipe: Recipe  # written as its canonical form, which recipe_sha256 hashes
    recipe_sha256: str
    text_tokenizer: TokenizerRef
    action_tokenizer: TokenizerRef
    encoding: Encoding
    sources: tuple[SourceEntry, ...] = field(default_factory=tuple)
    build_id: str = ""  # ties the manifest, the action tokenizer folder and every shard's samples to one build

    @property
    def source_names(self) -> list[str]:
        return [source.name for source in self.sources]

    def source(self, name: str) -> SourceEntry:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"the mixture has no source {name!r} (sources: {self.source_names})")

    def has_split(self, split: str) -> bool:
        return any(source.split_shards(split) for source in self.sources)

    @property
    def action_tokens(self) -> str:
        """The discrete action objective of the build: "fast" or "bins"."""
        return self.action_tokenizer.kind or "fast"

    def to_json(self) -> dict:
        return {"kidata_version": self.kidata_version, "recipe": self.recipe.canonical(),
                "recipe_sha256": self.recipe_sha256,
                "tokenizers": {"text": self.text_tokenizer.to_json(), "fast": self.action_tokenizer.to_json()},
                "encoding": self.encoding.to_json(), "sources": [source.to_json() for source in self.sources],
                **({"build_id": self.build_id} if self.build_id else {})}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Any, *, origin: str = "manifest") -> "Manifest":
        missing = [key for key in ("encoding", "sources", "tokenizers") if not isinstance(data, dict) or key not in data]
        if missing:
            raise ManifestMismatch(f"{origin} is not a kidata manifest (lacks {missing}): pass OUT/manifest.json of a "
                                   "kidata build")
        try:
            encoding = dict(data["encoding"])
            for key in ("fast_token_range", "special_state_range"):
                if encoding.get(key) is not None:
                    encoding[key] = tuple(encoding[key])
            sources = tuple(SourceEntry(**{**source, "skipped": source.get("skipped", {}),
                                           "delta_mask": tuple(source["delta_mask"]) if source.get("delta_mask") else None,
                                           "shards": tuple(ShardInfo(**shard) for shard in source["shards"])})
                            for source in data["sources"])
            recipe = Recipe.from_canonical(data.get("recipe", {}), origin=origin)
            return cls(kidata_version=data.get("kidata_version", "?"), recipe=recipe,
                       recipe_sha256=data.get("recipe_sha256", ""),
                       text_tokenizer=TokenizerRef(**data["tokenizers"]["text"]),
                       action_tokenizer=TokenizerRef(**data["tokenizers"]["fast"]),
                       encoding=Encoding(**encoding), sources=sources, build_id=data.get("build_id", ""))
        except RecordedRecipeError as error:
            raise ManifestMismatch(str(error)) from None
        except (KeyError, TypeError, ValueError) as error:  # ValueError: dict("x") of a table written as a string
            raise ManifestMismatch(f"{origin}: a field of the manifest is missing or unknown ({error}); rebuild "
                                   "the mixture with this kidata version") from None

    @classmethod
    def read(cls, path: str) -> tuple["Manifest", str]:
        """(manifest, root URL of the build) from a local path or fsspec URL."""
        import fsspec

        try:
            with fsspec.open(path, "r") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such manifest (a build writes OUT/manifest.json when it "
                                    "finishes)") from None
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ManifestMismatch(f"{path} is not valid JSON ({error}): pass the build's manifest.json") from None
        return cls.from_json(data, origin=path), BuildDir(path).root

    def check_expectations(self, expect: Mapping[str, Any]) -> None:
        """``expect`` may hold ``text_sha256``, ``fast_sha256`` and any ``encoding`` field;
        every difference is named."""
        problems = []
        for key, actual in (("text_sha256", self.text_tokenizer.sha256), ("fast_sha256", self.action_tokenizer.sha256)):
            if key in expect and expect[key] != actual:
                problems.append(f"{key}: build has {actual[:12]}, expected {str(expect[key])[:12]}")
        encoding = self.encoding.to_json()
        for key, value in expect.get("encoding", {}).items():
            if encoding.get(key) != value:
                problems.append(f"encoding.{key}: build has {encoding.get(key)!r}, expected {value!r}")
        if problems:
            raise ManifestMismatch("the mixture does not match this model: " + "; ".join(problems))


@dataclass(frozen=True)
class BuildDir:
    """A build's output folder, named by its manifest (a local path or fsspec URL, kept as given so
    messages name what the caller passed): where the manifest, the build report, the action
    tokenizer folder and the shards (paths relative to it in the manifest) are."""

    manifest_path: str

    @classmethod
    def at(cls, root: str) -> "BuildDir":
        """The build written into folder ``root`` (a path or URL without a trailing slash)."""
        return cls(f"{root}/{MANIFEST_FILE}")

    @property
    def root(self) -> str:
        return self.manifest_path.rsplit("/", 1)[0] if "/" in self.manifest_path else "."

    @property
    def report_path(self) -> str:
        return f"{self.root}/{BUILD_REPORT_FILE}"

    @property
    def action_tokenizer_path(self) -> str:
        return f"{self.root}/{ACTION_TOKENIZER_DIR}"

    def shard_path(self, relative: str) -> str:
        """A shard's location from its manifest path (relative to the build's folder)."""
        return f"{self.root}/{relative}"

    def read_manifest(self) -> Manifest:
        return Manifest.read(self.manifest_path)[0]
