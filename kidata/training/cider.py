"""CIDEr-D (Vedantam et al., CVPR 2015): the caption score VLM papers report (PaliGemma's COCO
captions), here for the held-out caption rows of a mixture (``vlm_caption_cider``).

Conventions are coco-caption's (the ``pycocoevalcap`` scorer every paper's number comes from), so
that a score here means what it means there: 1- to 4-grams of whitespace words; an n-gram's
weight is its count times log(images / images whose references hold it); per n, the cosine of
candidate and reference vectors with the candidate's weights clipped at the reference's; a
Gaussian length penalty (sigma 6) on the length difference, where coco-caption counts the length
in bigrams (kept: otherwise scores differ from the published ones); the mean over n and over
references, times 10. Checked equal to pycocoevalcap 1.2 to 1e-12 (benchmarks/RESULTS.md); that
package is a 104 MB wheel (Java jars for its tokenizer, METEOR and SPICE), so kidata keeps this
scorer instead of the dependency.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

MAX_N = 4
SIGMA = 6.0
_PUNCTUATION = re.compile(r"[^\w\s]")  # coco-caption's PTB tokenizer drops punctuation


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: what coco-caption's tokenizer leaves of a caption."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def _ngrams(tokens: Sequence[str]) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, MAX_N + 1) for i in range(len(tokens) - n + 1))


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """Each candidate's CIDEr-D against its references (``references[i]``: one or more captions
    of the same image); the document frequencies come from all the references given, so a score
    depends on the set it is computed over, as in coco-caption."""
    if len(candidates) != len(references) or any(not refs for refs in references):
        raise ValueError(f"CIDEr-D needs one or more references per candidate: {len(candidates)} candidates, "
                         f"{[len(r) for r in references]} references")
    reference_grams = [[_ngrams(words(ref)) for ref in refs] for refs in references]
    images_with = Counter(gram for refs in reference_grams for gram in set().union(*refs))
    log_images = math.log(len(candidates)) if candidates else 0.0

    def vector(grams: Counter) -> tuple[list[dict], list[float], int]:
        weights: list[dict] = [{} for _ in range(MAX_N)]
        for gram, count in grams.items():
            weights[len(gram) - 1][gram] = count * (log_images - math.log(max(1.0, images_with[gram])))
        norms = [math.sqrt(sum(w * w for w in by_n.values())) for by_n in weights]
        return weights, norms, sum(count for gram, count in grams.items() if len(gram) == 2)

    scores = []
    for candidate, refs in zip(candidates, reference_grams):
        mine, my_norms, my_length = vector(_ngrams(words(candidate)))
        total = 0.0
        for ref in refs:
            theirs, their_norms, their_length = vector(ref)
            penalty = math.exp(-((my_length - their_length) ** 2) / (2 * SIGMA ** 2))
            for n in range(MAX_N):
                overlap = sum(min(w, theirs[n].get(g, 0.0)) * theirs[n].get(g, 0.0) for g, w in mine[n].items())
                if my_norms[n] and their_norms[n]:
                    overlap /= my_norms[n] * their_norms[n]
                total += overlap * penalty / MAX_N
        scores.append(10.0 * total / len(refs))
    return scores
