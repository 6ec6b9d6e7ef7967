"""COCO captions and COCO detection (the paper's object localization data), official JSON layouts.

Captions: ``captions_{train,val}{2014,2017}.json`` + the image folder; one example per image with
all its captions (the build picks one per sample, seeded, or uses all). Detection:
``instances_{train,val}2017.json`` + images; one example per (image, category): "detect {label}"
with every box of that category as four ``<loc>`` bins (ymin, xmin, ymax, xmax of the padded image)
and the label, boxes joined by " ; " (PaliGemma). Crowd annotations (``iscrowd``: one region over
many objects) and degenerate boxes (width or height below one pixel) are left out of the targets
and counted; a (image, category) with no usable box is quarantined.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kidata.images import load_image
from kidata.schema import VlmExample
from kidata.sources.base import ReadReport
from kidata.sources.registry import register_reader
from kidata.sources.vlm import VlmSource, read_json


class CocoCaptions(VlmSource):
    def __init__(self, annotations: str | Path, images: str | Path, *, name: str = "coco_captions",
                 image_size: int = 224) -> None:
        super().__init__(name, image_size=image_size)
        self.annotations = Path(annotations)
        self.images = Path(images)

    def _records(self) -> list[dict[str, Any]]:
        data = read_json(self.annotations, ("images", "annotations"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        captions: dict[int, list[str]] = defaultdict(list)
        for annotation in data["annotations"]:
            captions[annotation["image_id"]].append(str(annotation.get("caption", "")))
        return [{"image_id": image_id, "file_name": files.get(image_id), "captions": texts}
                for image_id, texts in sorted(captions.items())]

    def _record_id(self, record: dict) -> str:
        return str(record["image_id"])

    def _example(self, record: dict, report: ReadReport) -> VlmExample | None:
        texts = [" ".join(text.split()) for text in record["captions"]]
        kept = tuple(text for text in texts if text)
        report.notices["empty_captions_dropped"] += len(texts) - len(kept)
        if not kept:
            report.quarantine("empty_caption", self._record_id(record))
            return None
        if record["file_name"] is None:
            report.quarantine("missing_image", self._record_id(record))
            return None
        image, geometry, _ = load_image(self.images / record["file_name"], self.image_size)
        return VlmExample(
            example_id=f"coco-{record['image_id']}", source=self.name, task="caption", image=image,
            targets=kept, metadata={"file_name": record["file_name"], "width": geometry.width, "height": geometry.height},
        )


class CocoDetection(VlmSource):
    def __init__(self, instances: str | Path, images: str | Path, *, name: str = "coco_detection",
                 image_size: int = 224) -> None:
        super().__init__(name, image_size=image_size)
        self.instances = Path(instances)
        self.images = Path(images)
        self._last: tuple[str, Any] | None = None  # (file, loaded image): records come grouped by image

    def _records(self) -> list[dict[str, Any]]:
        data = read_json(self.instances, ("images", "annotations", "categories"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        names = {category["id"]: category["name"] for category in data["categories"]}
        grouped: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for annotation in data["annotations"]:
            grouped[(annotation["image_id"], annotation["category_id"])].append(annotation)
        records = []
        for (image_id, category_id), group in sorted(grouped.items()):
            if category_id not in names:
                raise KeyError(f"{self.instances}: annotation category {category_id} not in 'categories'")
            records.append({"image_id": image_id, "file_name": files.get(image_id), "label": names[category_id],
                            "annotations": sorted(group, key=lambda a: a["id"])})
        return records

    def _record_id(self, record: dict) -> str:
        return f"{record['image_id']}/{record['label']}"

    def _example(self, record: dict, report: ReadReport) -> VlmExample | None:
        if record["file_name"] is None:
            report.quarantine("missing_image", self._record_id(record))
            return None
        if self._last is None or self._last[0] != record["file_name"]:
            self._last = (record["file_name"], load_image(self.images / record["file_name"], self.image_size))
        image, geometry, _ = self._last[1]
        boxes = []
        for annotation in record["annotations"]:
            if annotation.get("iscrowd", 0):
                report.notices["crowd_boxes_skipped"] += 1
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            if w < 1 or h < 1:
                report.notices["degenerate_boxes_skipped"] += 1
                continue
            x0, x1 = np.clip([x, x + w], 0, geometry.width)
            y0, y1 = np.clip([y, y + h], 0, geometry.height)
            (left, right), (top, bottom) = geometry.normalize_xy(np.array([x0, x1]), np.array([y0, y1]))
            boxes.append((top, left, bottom, right))
        if not boxes:
            report.quarantine("no_valid_boxes", self._record_id(record))
            return None
        return VlmExample(
            example_id=f"coco-{record['image_id']}-{record['label'].replace(' ', '_')}", source=self.name,
            task="detect", image=image, prompt=record["label"], boxes=np.asarray(boxes, dtype=np.float32),
            labels=(record["label"],) * len(boxes),
            metadata={"file_name": record["file_name"], "width": geometry.width, "height": geometry.height},
        )


@register_reader("coco_captions", kind="vlm", options=("annotations", "images"), paths=("annotations", "images"))
def open_coco_captions(options, *, name: str, image_size: int, seed: int = 0) -> CocoCaptions:
    return CocoCaptions(options["annotations"], options["images"], name=name, image_size=image_size)


@register_reader("coco_detection", kind="vlm", options=("instances", "images"), paths=("instances", "images"),
                 loc_tokens=True)
def open_coco_detection(options, *, name: str, image_size: int, seed: int = 0) -> CocoDetection:
    return CocoDetection(options["instances"], options["images"], name=name, image_size=image_size)
