"""The run directory's own folders and files, checked before training starts: a file where a
folder belongs (``RUN/checkpoints`` as a file) or a folder where a file belongs would otherwise
fail at the first checkpoint or report and lose the steps trained until then."""

from __future__ import annotations

import os
from pathlib import Path

RUN_FOLDERS = ("checkpoints", "fast_tokenizer")
RUN_FILES = ("config.json", "manifest.json", "metrics.jsonl", "report.json", "eval.json", "loss_curves.png")


def check_run_writable(run: Path) -> None:
    """Creates ``run``'s folders and proves each writable (a probe file written and removed);
    raises OSError naming the path and what to do when one cannot be."""
    for name in RUN_FOLDERS:
        folder = run / name
        if folder.exists() and not folder.is_dir():
            raise OSError(f"{folder} is a file where the run keeps its {name} folder: move it away or choose "
                          "another --out")
        probe = folder / f".kidata-write-test-{os.getpid()}"
        try:
            folder.mkdir(exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise OSError(f"{folder}: the run cannot write there ({error.strerror or error}); choose a writable "
                          "--out") from None
    for name in RUN_FILES:
        if (run / name).is_dir():
            raise OSError(f"{run / name} is a folder where the run writes its {name}: move it away or choose "
                          "another --out")
