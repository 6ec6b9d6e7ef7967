"""Progress bars in logs and the evaluator's thread budget (kidata.progress)."""

from __future__ import annotations

import time

import pytest

from kidata.progress import bar, torch_threads


def test_a_bar_written_to_a_log_redraws_at_its_start_and_end_not_at_every_update(capsys):
    with bar(total=2000, desc="train", unit="step") as shown:  # pytest's captured stderr is not a terminal
        for step in range(2000):  # about 1.2 s: a dozen redraws at a terminal's rate
            time.sleep(0.0006)
            shown.update(1)
            shown.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)
    redraws = capsys.readouterr().err.count("\r")
    assert 1 <= redraws <= 3  # a terminal bar redraws up to 10 times a second: thousands of lines in a log


def test_torch_threads_sets_the_count_inside_the_block_and_restores_it():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
