"""Progress bars and thread budgets shared by every long command (ground: imports nothing of kidata).

A bar redraws ten times a second on a terminal; written to a file or a pipe (``make demo > log``,
CI) it writes a line at most every ``LOG_INTERVAL_S`` seconds, not the thousands of carriage-return
updates a terminal bar makes (a 5000-step training wrote ~5000 of them into a log)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterable, Iterator

LOG_INTERVAL_S = 30.0


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool = False, initial: int = 0) -> Any:
    """A ``tqdm`` bar on standard error that updates rarely when standard error is not a terminal."""
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                mininterval=0.1 if interactive else LOG_INTERVAL_S, maxinterval=10.0 if interactive else 10 * LOG_INTERVAL_S)


def note(message: str) -> None:
    """One line on standard error that leaves any progress bar on screen intact (``tqdm.write``)."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``count`` inside the block and restored after; nothing when
    torch is not imported (a scripted policy needs none).

    Closed-loop evaluation renders in a child process while the policy infers in this one; with
    torch's default of one thread per core, its OpenMP workers can spin between the small per-step
    forwards on the cores the renderer needs. One inference thread costs nothing measurable when
    they do not (benchmarks/eval_threads_bench.py on the demo run, 2 cores, 2026-12-07: 8.5 s
    default vs 7.9 s with one thread on button-press-topdown, 3.3 s vs 3.3 s on window-close)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
