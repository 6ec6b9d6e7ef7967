"""What every robot source provides: disjoint work units, episodes per unit, and a read report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from kidata.schema import Episode, LanguageAnnotation, Quarantine


@dataclass(frozen=True)
class WorkUnit:
    """An independent slice of a source: episodes [start, stop) of one split or file.

    Units from one ``list_units`` call are disjoint and together cover every episode once, so
    workers (processes or Ray tasks) can read them in any order.
    """

    source: str
    part: str  # a split name or a file path
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{self.source}:{self.part}[{self.start}:{self.stop}]"


@dataclass
class ReadReport:
    """What a read kept out or noticed, by reason; reports from many units add up."""

    quarantined: Quarantine = field(default_factory=Quarantine)
    notices: Counter = field(default_factory=Counter)
    failed_units: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few record ids per reason

    EXAMPLES_PER_REASON = 5

    def quarantine(self, reason: str, record_id: str) -> None:
        """Counts a quarantined record and remembers the first few ids of each reason."""
        self.quarantined.add(reason)
        ids = self.examples.setdefault(reason, [])
        if len(ids) < self.EXAMPLES_PER_REASON:
            ids.append(record_id)

    def merge(self, other: "ReadReport") -> "ReadReport":
        self.quarantined.update(other.quarantined)
        self.notices.update(other.notices)
        self.failed_units.extend(other.failed_units)
        for reason, ids in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ids[: self.EXAMPLES_PER_REASON - len(mine)])
        return self


class RobotSource(Protocol):
    name: str

    def list_units(self, count: int) -> list[WorkUnit]: ...

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]: ...


def split_range(total: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous, disjoint, near-equal ranges covering [0, total) (empty ones dropped)."""
    count = max(1, min(count, total)) if total else 1
    bounds = [round(i * total / count) for i in range(count + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


# The largest metadata file a reader parses whole (COCO's instances_train2017.json, the largest of the
# corpora read here, is 448 MiB); past it, json.loads alone would need several times the file in memory.
MAX_METADATA_BYTES = 1 << 30


def read_metadata_text(path: str | Path, *, limit: int | None = None) -> str:
    """A JSON / JSONL metadata file's text, refused in one sentence when it is larger than ``limit``
    (default ``MAX_METADATA_BYTES``) or not UTF-8: a length read from data never decides an allocation."""
    path = Path(path)
    limit = MAX_METADATA_BYTES if limit is None else limit
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {size} bytes, over the {limit}-byte limit on a metadata file read whole; "
                         "split it (JSONL parts) or check that this is the file you meant")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text at byte {error.start}; a metadata file is JSON") from None


def load_annotations(path: str | Path | None) -> dict[str, tuple[LanguageAnnotation, ...]]:
    """Per-step language annotations from a JSON list or JSONL file of
    {"episode_id", "start", "stop", "text"} records, grouped by episode id."""
    if path is None:
        return {}
    text = read_metadata_text(path)
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON or JSONL at line {error.lineno}, column {error.colno} ({error.msg}); "
                         "annotations are a JSON list or one JSON object per line") from None
    grouped: dict[str, list[LanguageAnnotation]] = {}
    for number, record in enumerate(records):
        try:
            annotation = LanguageAnnotation(int(record["start"]), int(record["stop"]), str(record["text"]))
            grouped.setdefault(str(record["episode_id"]), []).append(annotation)
        except KeyError as error:
            raise ValueError(f"{path}: record {number} lacks {error.args[0]!r}") from error
    return {key: tuple(sorted(value, key=lambda a: a.start)) for key, value in grouped.items()}
