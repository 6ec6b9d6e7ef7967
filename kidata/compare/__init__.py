"""``kidata compare``: the paper's comparison (section 5, Fig. 6-7, Table 1) on the user's mixture.

One mixture, built once; then each (variant, co-training, seed) run trained with the same budget,
evaluation schedule and, per seed, the same data order; then one table and three plots. "Co-training
off" is the same manifest with the VLM sources weighed 0, so both arms read the same shards. Every
run evaluates at step 0 too (``eval.at_start``): the "before" of the VLM retention metrics is what
the initialization (``--init``, a ``vlm`` run) knew, measured the same way as the "after".

Resumable by construction: a run with a ``report.json`` is finished and not retrained; a run with
checkpoints resumes; the summary is recomputed from the runs' ``metrics.jsonl`` every time.

No direction is asserted: at small scale the paper's effects may not appear, and the table says
what happened.
"""

from __future__ import annotations

from typing import Any

from kidata.compare.runs import CompareConfig, build_once, train_all
from kidata.compare.summary import report

__all__ = ["CompareConfig", "compare", "report"]


def compare(config: CompareConfig) -> dict[str, Any]:
    """The whole comparison: the mixture built once, every run trained (``runs``), then the table
    and plots (``summary``). It lives here, above both, because the summary reads the runs'
    ``CompareConfig``: in ``runs`` it would make the two modules import each other."""
    config.out.mkdir(parents=True, exist_ok=True)
    manifest = build_once(config)
    train_all(config, manifest)
    return report(config)
