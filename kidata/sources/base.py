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


def load_annotations(path: str | Path | None) -> dict[str, tuple[LanguageAnnotation, ...]]:
    """Per-step language annotations from a JSON list or JSONL file of
    {"episode_id", "start", "stop", "text"} records, grouped by episode id."""
    if path is None:
        return {}
    text = Path(path).read_text()
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
