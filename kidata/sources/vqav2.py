"""VQAv2: official questions + annotations JSON and COCO images; the VQA answer normalization and
accuracy metric, for targets now and evaluations later.

Target answer: ``multiple_choice_answer`` by default (``answer="most_frequent"`` takes the most
frequent of the ten human answers instead; files without ``multiple_choice_answer``, such as
trimmed copies, fall back to it). Answers are normalized the way the official evaluation does:
lower case, punctuation, periods, number words to digits, articles dropped, common contractions.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from kidata.images import load_image
from kidata.schema import VlmExample
from kidata.sources.base import ReadReport
from kidata.sources.registry import register_reader
from kidata.sources.vlm import VlmSource, read_json

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hes": "he's", "im": "i'm",
    "isnt": "isn't", "itll": "it'll", "ive": "i've", "shouldnt": "shouldn't", "thats": "that's",
    "theres": "there's", "theyre": "they're", "wasnt": "wasn't", "werent": "weren't", "whats": "what's",
    "wheres": "where's", "whos": "who's", "wont": "won't", "wouldnt": "wouldn't", "youre": "you're",
}
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
    """The official VQA evaluation's answer normalization."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    for mark in _PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_BETWEEN_DIGITS.search(text) is not None:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _PERIOD.sub("", text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """min(#matches / 3, 1), averaged over the leave-one-out subsets of the human answers."""
    if not answers:
        raise ValueError("VQA accuracy needs the human answers")
    predicted = normalize_answer(prediction)
    normalized = [normalize_answer(a) for a in answers]
    scores = []
    for held_out in range(len(normalized)):
        others = normalized[:held_out] + normalized[held_out + 1 :]
        scores.append(min(1.0, sum(a == predicted for a in others) / 3.0))
    return sum(scores) / len(scores)


def most_frequent_answer(answers: Sequence[str]) -> str:
    """The most frequent normalized answer; ties go to the one given first."""
    normalized = [normalize_answer(a) for a in answers]
    counts = Counter(normalized)
    return max(normalized, key=lambda a: (counts[a], -normalized.index(a)))


class Vqav2(VlmSource):
    def __init__(self, questions: str | Path, annotations: str | Path, images: str | Path, *, name: str = "vqav2",
                 answer: str = "multiple_choice", image_size: int = 224) -> None:
        super().__init__(name, image_size=image_size)
        if answer not in ("multiple_choice", "most_frequent"):
            raise ValueError(f"answer must be 'multiple_choice' or 'most_frequent', got {answer!r}")
        self.questions = Path(questions)
        self.annotations = Path(annotations)
        self.images = Path(images)
        self.answer = answer

    def _records(self) -> list[dict[str, Any]]:
        questions = read_json(self.questions, ("questions",))
        annotations = read_json(self.annotations, ("annotations",))
        by_question = {a["question_id"]: a for a in annotations["annotations"]}
        subtype = questions.get("data_subtype", "")
        return [{"question": q, "annotation": by_question.get(q["question_id"]), "subtype": subtype}
                for q in sorted(questions["questions"], key=lambda q: q["question_id"])]

    def _record_id(self, record: dict) -> str:
        return str(record["question"]["question_id"])

    def _image_path(self, image_id: int, subtype: str) -> Path:
        candidates = [self.images / f"COCO_{subtype}_{image_id:012d}.jpg", self.images / f"{image_id:012d}.jpg"]
        return next((path for path in candidates if path.is_file()), candidates[0])

    def _example(self, record: dict, report: ReadReport) -> VlmExample | None:
        question, annotation = record["question"], record["annotation"]
        if annotation is None:
            report.quarantine("question_without_annotation", self._record_id(record))
            return None
        answers = [a["answer"] for a in annotation.get("answers", [])]
        if self.answer == "multiple_choice" and annotation.get("multiple_choice_answer"):
            target = normalize_answer(annotation["multiple_choice_answer"])
        elif answers:
            target = most_frequent_answer(answers)
            if self.answer == "multiple_choice":
                report.notices["no_multiple_choice_answer_used_most_frequent"] += 1
        else:
            report.quarantine("no_answers", self._record_id(record))
            return None
        image, geometry, _ = load_image(self._image_path(question["image_id"], record["subtype"]), self.image_size)
        return VlmExample(
            example_id=f"vqa-{question['question_id']}", source=self.name, task="vqa", image=image,
            prompt=" ".join(question["question"].split()), targets=(target,),
            metadata={"image_id": question["image_id"], "answers": answers,
                      "answer_type": annotation.get("answer_type"), "question_type": annotation.get("question_type"),
                      "width": geometry.width, "height": geometry.height},
        )


@register_reader("vqav2", kind="vlm", options=("questions", "annotations", "images", "answer"),
                 paths=("questions", "annotations", "images"))
def open_vqav2(options, *, name: str, image_size: int, seed: int = 0) -> Vqav2:
    return Vqav2(options["questions"], options["annotations"], options["images"], name=name,
                 answer=options.get("answer", "multiple_choice"), image_size=image_size)
