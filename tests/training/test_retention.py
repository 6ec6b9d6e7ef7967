"""Held-out VLM metrics (what co-training is meant to keep): exact match per VLM task and pointing
error, on hand-made predictions with hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kidata.loader.collate import collate  # noqa: E402
from kidata.tokenizers.fast import FastTokenizer  # noqa: E402
from kidata.tokenizers.prompt import SampleEncoder  # noqa: E402
from kidata.tokenizers.ranges import ActionIdMap  # noqa: E402
from kidata.tokenizers.text import TextTokenizer  # noqa: E402
from kidata.training.held_out import HeldOutMetrics  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> SampleEncoder:
    from kidata.sources.synthetic import action_chunks

    text = TextTokenizer.load("tokenizers/demo-text")
    fast = FastTokenizer.fit(action_chunks(200, 4, 4, seed=1), vocab_size=256)
    return SampleEncoder(text, fast, id_map=ActionIdMap(text.vocab_size, 256, rule="offset", offset=text.vocab_size),
                         uses_loc_tokens=True)


def batch_of(samples) -> dict:
    records = [{"tokens": s.tokens, "ar": s.ar, "loss": s.loss, "images": {}, "state": None, "actions": None,
                "meta": {"prefix_length": s.prefix_length, "kind": s.kind}, "source_index": 0} for s in samples]
    return collate(records, max_tokens=max(len(s.tokens) for s in samples), action_dim=4, action_horizon=4,
                   state_dim=4, cameras=["base_0"], image_size=16)


class Answers:
    """A model stand-in that answers each row with a given token list (and predicts token 0 when
    teacher-forced, so token accuracy is 0)."""

    config = SimpleNamespace(has_expert=True, fast_loss=True)

    def __init__(self, answers: list[list[int]]) -> None:
        self.answers = answers

    def __call__(self, batch):
        return {"logits": torch.zeros(int(batch["loss"][:, 1:].sum()), 8)}  # one row per loss-masked target

    def generate(self, prompt, max_new_tokens, *, stop_ids=()):
        return torch.tensor([(row + [0] * max_new_tokens)[:max_new_tokens] for row in self.answers])


def test_exact_match_per_vlm_task_and_the_pointing_error_in_image_sides(encoder):
    text = encoder.text
    right = encoder.vqa("is the gripper open or closed?", "open")
    wrong = encoder.vqa("is the goal left or right of the gripper?", "left")
    point = encoder.point("goal", np.array([[0.25, 0.5]], dtype=np.float32))
    far = encoder.point("puck", np.array([[0.5, 0.5]], dtype=np.float32))
    target = lambda s: s.tokens[s.prefix_length:].tolist()  # noqa: E731
    loc = lambda y, x: [text.loc_id(y), text.loc_id(x)]  # noqa: E731
    y, x = target(point)[:2]
    first = text.loc_range()[0]
    assert (y - first, x - first) == (256, 512)  # 0.25 and 0.5 of 1024 bins
    answers = [target(right), text.encode("right") + [text.eos_id],
               loc(256 + 30, 512 + 40) + target(point)[2:],  # 50 bins off: 50 / 1024 of the image side
               text.encode("the puck") + [text.eos_id]]  # no point at all
    metrics = HeldOutMetrics(SimpleNamespace(encoding=SimpleNamespace(action_horizon=4, action_dim=4,
                                                                      normalization="quantile"), sources=[]), encoder)
    metrics.update(Answers(answers), batch_of([right, wrong, point, far]))
    result = metrics.result()
    assert result["vlm_exact_match"] == 0.25
    assert result["vlm_exact_match/vqa"] == 0.5 and result["vlm_exact_match/point"] == 0.0
    assert result["vlm_point_parsed"] == 0.5  # the second pointing answer names no point
    assert result["vlm_point_error"] == pytest.approx(50 / 1024)
    assert result["vlm_point_within_0.05"] == 1.0  # 0.049 of the side
    assert result["vlm_token_accuracy"] == 0.0


def test_caption_rows_are_scored_with_cider_d_over_the_evaluated_captions(encoder):
    text = encoder.text
    cup, box = encoder.caption("a red cup"), encoder.caption("a blue box")
    answers = [text.encode("A red cup.") + [text.eos_id] + text.encode("and more"),  # cut at the stop token
               text.encode("the dog") + [text.eos_id]]
    metrics = HeldOutMetrics(SimpleNamespace(encoding=SimpleNamespace(action_horizon=4, action_dim=4,
                                                                      normalization="quantile"), sources=[]), encoder)
    metrics.update(Answers(answers), batch_of([cup, box]))
    result = metrics.result()
    # "a" is in both references (idf 0); the perfect caption's 1-, 2- and 3-gram vectors equal the
    # reference's (cosine 1 each), it has no 4-gram (0), same length: 10 * 3/4; "the dog" shares nothing
    assert result["vlm_caption_cider"] == pytest.approx((7.5 + 0.0) / 2)
    assert result["vlm_exact_match/caption"] == 0.0  # "A red cup." is not token for token the target


def test_cider_d_refuses_a_candidate_without_references():
    from kidata.training.cider import cider_d

    with pytest.raises(ValueError, match=r"one or more references per candidate: 2 candidates, \[1, 0\] references"):
        cider_d(["a cup", "a box"], [["a cup"], []])


@pytest.mark.parametrize("candidate, expected", [
    ("first", 0.964568258732839),  # each image's first caption against its others
    ("reversed", 0.5976464648585742),  # the same words backwards: the 2- to 4-grams are gone
    ("repeated", 0.13575842871532365),  # the caption twice: clipped counts and the length penalty
])
def test_cider_d_equals_coco_captions_scorer_on_real_coco_captions(candidate, expected):
    """Expected values: pycocoevalcap 1.2's CiderScorer on the same whitespace words (run once)."""
    import json
    from collections import defaultdict

    from support.data import shared_path

    from kidata.training.cider import cider_d

    path = shared_path("data", "coco_vqa_annotation_samples", "coco2017", "annotations_trainval2017", "annotations",
                       "captions_val2017.json_samples.json")
    captions = defaultdict(list)
    for annotation in json.loads(path.read_text())["annotations"]:
        captions[annotation["image_id"]].append(annotation["caption"])
    images = [image for image in sorted(captions) if len(captions[image]) >= 2]
    make = {"first": lambda c: c, "reversed": lambda c: " ".join(reversed(c.split())),
            "repeated": lambda c: f"{c} {c}"}[candidate]
    scores = cider_d([make(captions[image][0]) for image in images], [captions[image][1:] for image in images])
    assert len(images) == 23 and sum(scores) / len(scores) == pytest.approx(expected, abs=1e-12)
