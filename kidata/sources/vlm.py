"""What every VLM corpus reader shares: records indexed once, disjoint units, quarantine."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

from kidata.images import ImageDefect
from kidata.schema import VlmExample
from kidata.sources.base import ReadReport, WorkUnit, read_metadata_text, split_range


def read_json(path: str | Path, required: tuple[str, ...]) -> dict[str, Any]:
    """A JSON annotation file; bad JSON or a missing top-level key is an error naming both."""
    path = Path(path)
    try:
        data = json.loads(read_metadata_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    for key in required:
        if key not in data:
            raise KeyError(f"{path}: missing top-level key {key!r} (has {sorted(data)})")
    return data


class VlmSource(ABC):
    """Base reader: subclasses index cheap records in ``_records`` and build examples in ``_example``.

    Records are indexed once, in a deterministic order; units are contiguous record ranges.
    """

    kind = "vlm"

    def __init__(self, name: str, *, image_size: int = 224) -> None:
        self.name = name
        self.image_size = image_size
        self._cache: list[Any] | None = None

    @abstractmethod
    def _records(self) -> list[Any]:
        """Cheap per-example records (annotations, no images), in a deterministic order."""

    @abstractmethod
    def _example(self, record: Any, report: ReadReport) -> VlmExample | None:
        """The example of a record (decodes its image), or None after counting a quarantine."""

    @abstractmethod
    def _record_id(self, record: Any) -> str:
        """The id quarantine reports list for a record."""

    @property
    def records(self) -> list[Any]:
        if self._cache is None:
            self._cache = self._records()
        return self._cache

    def __len__(self) -> int:
        return len(self.records)

    def list_units(self, count: int) -> list[WorkUnit]:
        return [WorkUnit(self.name, "examples", a, b) for a, b in split_range(len(self.records), count)]

    def read(self, unit: WorkUnit, *, report: ReadReport | None = None, **_: Any) -> Iterator[VlmExample]:
        report = report if report is not None else ReadReport()
        for record in self.records[unit.start : unit.stop]:
            try:
                example = self._example(record, report)
            except ImageDefect as defect:
                report.quarantine(defect.reason, self._record_id(record))
                continue
            if example is not None:
                yield example

    def examples(self, *, report: ReadReport | None = None) -> Iterator[VlmExample]:
        """Every example, in record order. A corpus none of whose records gives an example (the
        images folder of another split, an annotation file of another version) ends in an error
        naming the reasons counted, not in an empty iteration."""
        report = report if report is not None else ReadReport()
        yielded = 0
        for unit in self.list_units(1):
            for example in self.read(unit, report=report):
                yielded += 1
                yield example
        if not yielded and len(self.records):
            raise ValueError(f"{type(self).__name__} {self.name!r}: none of its {len(self.records)} records gave an example "
                             f"(quarantined {report.quarantined.as_dict()}, e.g. {report.examples}); check the "
                             "annotation file and the images folder")
