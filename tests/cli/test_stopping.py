"""SIGTERM ends a long command as Ctrl-C does (kidata.cli._stopping)."""

import os
import signal

import pytest

from kidata.cli._stopping import SigtermAsInterrupt


def test_a_sigterm_inside_the_block_is_a_keyboard_interrupt_that_names_sigterm():
    stop = SigtermAsInterrupt()
    with pytest.raises(KeyboardInterrupt):
        with stop:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the pending handler runs here at the latest
    assert stop.signum == signal.SIGTERM


def test_the_block_restores_the_previous_sigterm_handler_however_it_ends():
    def previous(signum, frame):
        pass

    original = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(ValueError):
            with SigtermAsInterrupt():
                assert signal.getsignal(signal.SIGTERM) is not previous
                raise ValueError("a failure inside the block")
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


def test_without_a_signal_the_block_reports_ctrl_c():
    with SigtermAsInterrupt() as stop:
        pass
    assert stop.signum == signal.SIGINT
