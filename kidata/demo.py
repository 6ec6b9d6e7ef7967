"""``make demo``: the main job on the embedded default data.

Today: fit FAST tokenizers on generated robot-like action chunks of two shapes (a 50 Hz-style
8-d chunk and a 10-step 7-d chunk), then report compression and reconstruction against naive
binning. Later stages of the pipeline join here as they land.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer
from kidata.tokenizers.report import evaluate, write_report

DEMO_SHAPES = ((50, 8), (10, 7))
DEMO_CHUNKS = 20_000


def run_demo(out: Path, *, chunks_per_shape: int = DEMO_CHUNKS) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for horizon, dim in DEMO_SHAPES:
        name = f"fast_{horizon}x{dim}"
        chunks = action_chunks(chunks_per_shape, horizon, dim, seed=horizon * 100 + dim)
        chunk_file = out / f"{name}_chunks.npy"
        np.save(chunk_file, chunks)
        held_out = action_chunks(2_000, horizon, dim, seed=horizon * 100 + dim + 1)
        print(f"\n== {name}: fitting on {len(chunks)} generated chunks ({chunk_file})", flush=True)
        tokenizer = FastTokenizer.fit(chunks, vocab_size=1024, scale=10.0, show_progress=False)
        directory = tokenizer.save(out / name)
        report = evaluate(tokenizer, held_out)
        write_report(report, directory / "report")
        print(report.summary())
        print(f"tokenizer: {directory}  report: {directory / 'report'}")
        written.append(directory)
    return written
