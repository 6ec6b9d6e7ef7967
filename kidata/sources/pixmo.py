"""PixMo (allenai/pixmo-cap, pixmo-points, pixmo-ask-model-anything) from local parquet files.

The datasets store image URLs (and, where present, ``image_sha256``), not images. Images come
from a local mirror folder: ``MIRROR/<key>`` where key is the image's sha256 when the row has one,
else the sha256 of its URL (``kidata fetch-images`` fills the mirror). A file whose content does
not match the row's sha256 is quarantined, never used.

Columns read: pixmo-cap ``image_url, caption``; pixmo-points ``image_url, image_sha256, points
(list of {x, y} in pixels), count, label``; pixmo-ask-model-anything ``image_url, image_sha256,
question, answer``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kidata.images import ImageDefect, load_image
from kidata.schema import VlmExample
from kidata.sources.base import ReadReport
from kidata.sources.registry import register_reader
from kidata.sources.vlm import VlmSource

PIXMO_KINDS = {
    "cap": ("image_url", "caption"),
    "points": ("image_url", "points", "label"),
    "ask": ("image_url", "question", "answer"),
}


def image_key(url: str, sha256: str | None) -> str:
    """Mirror file name of an image: its sha256 when known, else the sha256 of its URL."""
    return sha256.lower() if sha256 else hashlib.sha256(url.encode("utf-8")).hexdigest()


def read_parquet_rows(files: Sequence[str | Path], required: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of local parquet files (pyarrow), in file order; missing columns are an error."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - optional extra
        raise ImportError("reading PixMo parquet needs pyarrow: pip install 'kidata[vlm]'") from error
    rows: list[dict[str, Any]] = []
    for file in files:
        table = pq.read_table(str(file))
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise KeyError(f"{file}: missing column(s) {missing} (has {table.column_names})")
        rows.extend(table.to_pylist())
    return rows


class PixmoSource(VlmSource):
    """One PixMo dataset; ``kind`` is "cap", "points" or "ask"."""

    def __init__(self, kind: str, parquet: Sequence[str | Path] | str | Path, mirror: str | Path, *,
                 name: str | None = None, image_size: int = 224) -> None:
        if kind not in PIXMO_KINDS:
            raise ValueError(f"PixMo kind must be one of {sorted(PIXMO_KINDS)}, got {kind!r}")
        super().__init__(name or f"pixmo_{kind}", image_size=image_size)
        paths = [parquet] if isinstance(parquet, (str, Path)) else list(parquet)
        self.files: list[Path] = []
        for path in map(Path, paths):
            self.files.extend(sorted(path.glob("*.parquet")) if path.is_dir() else [path])
        self.kind = kind
        self.mirror = Path(mirror)

    def _records(self) -> list[dict[str, Any]]:
        rows = read_parquet_rows(self.files, PIXMO_KINDS[self.kind])
        return [{"row": index, **row} for index, row in enumerate(rows)]

    def _record_id(self, record: dict) -> str:
        return f"{self.name}-{record['row']}"

    def _image(self, record: dict):
        sha = record.get("image_sha256")
        key = image_key(record["image_url"], sha)
        path = self.mirror / key
        if not path.is_file():
            path = next(iter(sorted(self.mirror.glob(f"{key}.*"))), path)
        image, geometry, data = load_image(path, self.image_size)
        if sha and hashlib.sha256(data).hexdigest() != sha.lower():
            raise ImageDefect("sha256_mismatch", f"{path}: content does not match sha256 {sha}")
        return image, geometry, key

    def _example(self, record: dict, report: ReadReport) -> VlmExample | None:
        example_id = self._record_id(record)
        if self.kind == "cap":
            caption = " ".join(str(record.get("caption") or "").split())
            if not caption:
                report.quarantine("empty_caption", example_id)
                return None
            image, geometry, key = self._image(record)
            return VlmExample(example_id, self.name, "caption", image, targets=(caption,),
                              metadata={"image_key": key, "width": geometry.width, "height": geometry.height})
        if self.kind == "ask":
            question = " ".join(str(record.get("question") or "").split())
            answer = str(record.get("answer") or "").strip()
            if not question or not answer:
                report.quarantine("empty_question_or_answer", example_id)
                return None
            image, geometry, key = self._image(record)
            return VlmExample(example_id, self.name, "vqa", image, prompt=question, targets=(answer,),
                              metadata={"image_key": key, "width": geometry.width, "height": geometry.height})
        points = record.get("points") or []
        label = " ".join(str(record.get("label") or "").split())
        if not points or not label:
            report.quarantine("no_points" if not points else "empty_label", example_id)
            return None
        image, geometry, key = self._image(record)
        x = np.array([float(p["x"]) for p in points])
        y = np.array([float(p["y"]) for p in points])
        if (x < 0).any() or (y < 0).any() or (x > geometry.width).any() or (y > geometry.height).any():
            report.quarantine("points_outside_image", example_id)
            return None
        nx, ny = geometry.normalize_xy(x, y)
        return VlmExample(
            example_id, self.name, "point", image, prompt=label,
            points=np.stack([ny, nx], axis=1).astype(np.float32), labels=(label,) * len(points),
            metadata={"image_key": key, "count": record.get("count", len(points)),
                      "collection_method": record.get("collection_method"),
                      "width": geometry.width, "height": geometry.height},
        )


def _register_pixmo(kind: str, *, loc_tokens: bool) -> None:
    @register_reader(f"pixmo_{kind}", kind="vlm", options=("parquet", "mirror"), paths=("parquet", "mirror"),
                     loc_tokens=loc_tokens)
    def open_pixmo(options, *, name: str, image_size: int, seed: int = 0) -> PixmoSource:
        return PixmoSource(kind, options["parquet"], options["mirror"], name=name, image_size=image_size)


_register_pixmo("cap", loc_tokens=False)
_register_pixmo("points", loc_tokens=True)
_register_pixmo("ask", loc_tokens=False)
