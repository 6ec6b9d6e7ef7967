"""VLM corpora on the real files in ../shared/data (COCO captions/detection, VQAv2) and PixMo."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from support.data import shared_path

from kidata.images import PadGeometry, decode_image, resize_with_pad
from kidata.sources.base import ReadReport
from kidata.sources.coco import CocoCaptions, CocoDetection
from kidata.sources.vqav2 import Vqav2, most_frequent_answer, normalize_answer, vqa_accuracy


def coco_images():
    return shared_path("data", "coco_detection", "images", "val2017")


def read(source):
    """Examples and counts as a build reads them: unit by unit (``examples()`` refuses an empty corpus)."""
    report = ReadReport()
    return [example for unit in source.list_units(1) for example in source.read(unit, report=report)], report


@pytest.mark.parametrize("year,folder", [("2014", "coco"), ("2017", "coco2017")])
def test_real_caption_samples_without_their_images_count_as_missing(year, folder):
    annotations = shared_path("data", "coco_vqa_annotation_samples", folder, f"annotations_trainval{year}",
                              "annotations", f"captions_val{year}.json_samples.json")
    examples, report = read(CocoCaptions(annotations, coco_images()))
    assert examples == []
    assert set(report.quarantined) == {"missing_image"} and report.quarantined["missing_image"] > 0
    assert len(report.examples["missing_image"]) == 5


def test_captions_with_images_give_one_example_per_image_with_all_captions(tmp_path):
    annotations = tmp_path / "captions.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 444010, "file_name": "000000444010.jpg", "width": 640, "height": 480},
                   {"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 444010, "caption": "A table  with food."},
                        {"id": 2, "image_id": 444010, "caption": "People eating dinner."},
                        {"id": 3, "image_id": 444010, "caption": "   "},
                        {"id": 4, "image_id": 1, "caption": "missing"}],
    }))
    examples, report = read(CocoCaptions(annotations, coco_images(), image_size=224))
    assert len(examples) == 1
    assert examples[0].targets == ("A table with food.", "People eating dinner.")
    assert examples[0].image.shape == (224, 224, 3)
    assert report.quarantined.as_dict() == {"missing_image": 1} and report.notices["empty_captions_dropped"] == 1


def mask_box_bins(box, width, height, size=224):
    """Independent check: paint the box, resize with padding, measure where it landed (in bins)."""
    x, y, w, h = box
    mask = np.zeros((height, width, 3), dtype=np.uint8)
    mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = 255
    rows, cols = np.nonzero(resize_with_pad(mask, size)[:, :, 0] > 127)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / size * 1024


def test_every_non_crowd_detection_box_lands_on_its_pixels_in_the_padded_image():
    instances = shared_path("data", "coco_detection", "annotations", "instances_val2017.json")
    examples, report = read(CocoDetection(instances, coco_images()))
    assert sum(len(e.boxes) for e in examples) == 135
    assert report.notices["crowd_boxes_skipped"] == 1 and report.quarantined.as_dict() == {}
    data = json.loads(instances.read_text())
    sizes = {i["id"]: (i["width"], i["height"]) for i in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    expected = {}
    for a in data["annotations"]:
        if not a["iscrowd"]:
            expected.setdefault((a["image_id"], names[a["category_id"]]), []).append(a)
    checked = 0
    for example in examples:
        image_id = int(example.example_id.split("-")[1])
        annotations = sorted(expected[(image_id, example.prompt)], key=lambda a: a["id"])
        assert len(annotations) == len(example.boxes)
        for annotation, box in zip(annotations, example.boxes):
            if annotation["bbox"][2] < 4 or annotation["bbox"][3] < 4:
                continue  # too small to paint reliably
            bins = np.floor(box * 1024)
            np.testing.assert_allclose(bins, mask_box_bins(annotation["bbox"], *sizes[image_id]), atol=12)
            checked += 1
    assert checked > 100


def test_a_full_image_box_on_a_landscape_image_spans_the_letterbox():
    geometry = PadGeometry(640, 480, 224)
    (left, right), (top, bottom) = geometry.normalize_xy(np.array([0.0, 640.0]), np.array([0.0, 480.0]))
    assert (top, bottom, left, right) == (28 / 224, 196 / 224, 0.0, 1.0)


def test_vqav2_real_questions_answers_and_images():
    root = shared_path("data", "vqav2_allennlp")
    examples, report = read(Vqav2(root / "questions.json", root / "annotations.json", root / "images"))
    assert [(e.prompt, e.targets) for e in examples] == [
        ("What is this photo taken looking through?", ("net",)),
        ("What position is this man playing?", ("pitcher",)),
        ("What color is the players shirt?", ("orange",)),
    ]
    # the trimmed annotations have no multiple_choice_answer: the most frequent answer is used
    assert report.notices["no_multiple_choice_answer_used_most_frequent"] == 3
    assert all(e.image.shape == (224, 224, 3) and len(e.metadata["answers"]) == 10 for e in examples)


def test_vqav2_official_annotation_samples_use_multiple_choice_answer(tmp_path):
    annotations = shared_path("data", "coco_vqa_annotation_samples", "vqa2", "v2_Annotations_Val_mscoco",
                              "v2_mscoco_val2014_annotations.json_samples.json")
    records = json.loads(annotations.read_text())["annotations"]
    wanted = [r for r in records if r["image_id"] in (262148, 393225)]
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps({"data_subtype": "val2014", "questions": [
        {"image_id": r["image_id"], "question": "q?", "question_id": r["question_id"]} for r in wanted]
        + [{"image_id": 262148, "question": "orphan?", "question_id": 1}]}))
    examples, report = read(Vqav2(questions, annotations, shared_path("data", "vqav2_allennlp", "images")))
    assert [e.targets[0] for e in examples] == [normalize_answer(r["multiple_choice_answer"])
                                                for r in sorted(wanted, key=lambda r: r["question_id"])]
    assert report.quarantined.as_dict() == {"question_without_annotation": 1}


@pytest.mark.parametrize("raw,normalized", [
    ("Two", "2"), ("the dog.", "dog"), ("Yes!", "yes"), ("dont know", "don't know"), ("a red, blue ball", "red blue ball"),
    ("1,000", "1000"), ("3.5", "3.5"), ("none", "0"), ("  Pizza\n", "pizza"),
])
def test_vqa_answer_normalization(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_vqa_accuracy_on_known_cases():
    assert vqa_accuracy("two", ["2"] * 10) == 1.0
    assert vqa_accuracy("net", ["net", "net"] + ["mesh"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0
    assert vqa_accuracy("Net.", ["net"] * 3 + ["fence"] * 7) == pytest.approx((3 * (2 / 3) + 7 * 1.0) / 10)
    assert most_frequent_answer(["a dog", "cat", "Dog"]) == "dog"


def test_malformed_annotation_files_are_errors_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        _ = CocoCaptions(bad, tmp_path).records
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": []}))
    with pytest.raises(KeyError, match="partial.json: missing top-level key 'annotations'"):
        _ = CocoCaptions(partial, tmp_path).records


def test_corrupt_and_truncated_images_are_quarantined(tmp_path):
    source = coco_images() / "000000444010.jpg"
    (tmp_path / "truncated.jpg").write_bytes(source.read_bytes()[:5000])
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    annotations = tmp_path / "captions.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "truncated.jpg"}, {"id": 2, "file_name": "garbage.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "x"}, {"id": 2, "image_id": 2, "caption": "y"}]}))
    examples, report = read(CocoCaptions(annotations, tmp_path))
    assert examples == [] and report.quarantined.as_dict() == {"corrupt_image": 2}


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P"])
def test_grayscale_cmyk_alpha_and_palette_images_become_rgb(mode):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.new("RGB", (30, 20), (200, 100, 50)).convert(mode)
    image.save(buffer, format="PNG" if mode in ("RGBA", "P") else "JPEG" if mode == "CMYK" else "PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8
    padded = resize_with_pad(decoded, 64)
    assert padded.shape == (64, 64, 3) and not padded[:10].any()  # letterbox rows are black


# ------------------------------------------------------------------------------------- PixMo
@pytest.fixture()
def pixmo_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    first, second = (coco_images() / f"{n}.jpg" for n in ("000000444010", "000000475546"))
    sha_first = hashlib.sha256(first.read_bytes()).hexdigest()
    sha_second = hashlib.sha256(second.read_bytes()).hexdigest()
    shutil.copy(first, mirror / sha_first)
    shutil.copy(first, mirror / sha_second)  # wrong content under the second image's name
    points = pa.table({
        "image_url": ["http://x/a.jpg", "http://x/b.jpg", "http://x/c.jpg", "http://x/a.jpg"],
        "image_sha256": [sha_first, sha_second, "0" * 64, sha_first],
        "points": [[{"x": 320.0, "y": 240.0}, {"x": 0.0, "y": 0.0}], [{"x": 1.0, "y": 1.0}], [{"x": 1.0, "y": 1.0}],
                   [{"x": 900.0, "y": 10.0}]],
        "count": [2, 1, 1, 1],
        "label": ["plate", "cup", "fork", "chair"],
        "collection_method": ["pointing"] * 4,
    })
    pq.write_table(points, tmp_path / "points.parquet")
    caption_url = "http://example.org/cap.jpg"
    shutil.copy(second, mirror / hashlib.sha256(caption_url.encode()).hexdigest())
    pq.write_table(pa.table({"image_url": [caption_url], "caption": ["A  dog on a couch."], "transcripts": [["a dog"]]}),
                   tmp_path / "cap.parquet")
    pq.write_table(pa.table({"image_url": ["http://x/a.jpg"], "image_sha256": [sha_first],
                             "question": ["What is on the table?"], "answer": ["Plates of food."]}),
                   tmp_path / "ask.parquet")
    return tmp_path, mirror


def test_pixmo_points_become_normalized_pointing_targets_and_bad_rows_are_quarantined(pixmo_files):
    from kidata.sources.pixmo import PixmoSource

    root, mirror = pixmo_files
    examples, report = read(PixmoSource("points", root / "points.parquet", mirror))
    assert [e.prompt for e in examples] == ["plate"]
    np.testing.assert_allclose(examples[0].points, [[0.5, 0.5], [28 / 224, 0.0]], atol=1e-6)
    assert examples[0].metadata["count"] == 2
    assert report.quarantined.as_dict() == {"sha256_mismatch": 1, "missing_image": 1, "points_outside_image": 1}
    assert report.examples["sha256_mismatch"] == ["pixmo_points-1"]


def test_pixmo_captions_by_url_hash_and_ask_model_anything(pixmo_files):
    from kidata.sources.pixmo import PixmoSource

    root, mirror = pixmo_files
    captions, _ = read(PixmoSource("cap", root / "cap.parquet", mirror))
    assert captions[0].targets == ("A dog on a couch.",) and captions[0].task == "caption"
    asks, _ = read(PixmoSource("ask", root / "ask.parquet", mirror))
    assert (asks[0].task, asks[0].prompt, asks[0].targets) == ("vqa", "What is on the table?", ("Plates of food.",))


def test_fetch_images_downloads_verifies_resumes_and_reports(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import functools
    import http.server
    import threading

    import pyarrow.parquet as pq

    from kidata.sources.fetch import fetch_images
    from kidata.sources.pixmo import image_key

    served = tmp_path / "served"
    served.mkdir()
    good = coco_images() / "000000565004.jpg"
    shutil.copy(good, served / "good.jpg")
    shutil.copy(good, served / "tampered.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        sha = hashlib.sha256(good.read_bytes()).hexdigest()
        urls = [f"{base}/good.jpg", f"{base}/tampered.jpg", f"{base}/missing.jpg"]
        pq.write_table(pa.table({"image_url": urls, "image_sha256": [sha, "f" * 64, None]}), tmp_path / "p.parquet")
        report = fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=4, progress=False,
                              allowed=["127.0.0.1"])  # the test's server: loopback is refused unless allowed
        assert (report.fetched, report.failed) == (1, 2)
        assert sorted(report.failures) == ["download_error:HTTPError", "sha256_mismatch"]
        assert (tmp_path / "mirror" / image_key(urls[0], sha)).read_bytes() == good.read_bytes()
        again = fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=4, progress=False,
                             allowed=["127.0.0.1"])
        assert (again.fetched, again.present) == (0, 1)
    finally:
        server.shutdown()


def test_iterating_a_corpus_none_of_whose_records_gives_an_example_ends_in_an_error_naming_the_reasons(tmp_path):
    from kidata.sources.coco import CocoCaptions

    (tmp_path / "captions.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "a dog"}, {"id": 2, "image_id": 2, "caption": "a cat"}]}))
    (tmp_path / "images").mkdir()  # the images of another split: none of these files is there
    reader = CocoCaptions(tmp_path / "captions.json", tmp_path / "images")
    with pytest.raises(ValueError, match=r"CocoCaptions 'coco_captions': none of its 2 records gave an example "
                                         r"\(quarantined \{'missing_image': 2\}"):
        list(reader.examples())


def test_an_annotation_file_over_the_metadata_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    from kidata.sources import base
    from kidata.sources.coco import CocoCaptions

    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": []}) + " " * 100)
    monkeypatch.setattr(base, "MAX_METADATA_BYTES", 64)
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1))
    with pytest.raises(ValueError, match=r"captions.json: 133 bytes, over the 64-byte limit on a metadata file read whole"):
        len(CocoCaptions(tmp_path / "captions.json", tmp_path))
    assert not parsed
    (tmp_path / "latin.json").write_bytes(b'{"images": "\xe9"}')
    monkeypatch.setattr(base, "MAX_METADATA_BYTES", 1 << 20)
    with pytest.raises(ValueError, match=r"latin.json: not UTF-8 text at byte 12; a metadata file is JSON"):
        len(CocoCaptions(tmp_path / "latin.json", tmp_path))
