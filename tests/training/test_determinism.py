"""``train.deterministic``: PyTorch's deterministic algorithms and a fixed cuBLAS workspace for the
run, refused in one sentence when the environment fixes another workspace, restored afterwards."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from kidata.training import trainer  # noqa: E402
from kidata.training.config import TrainConfig, load  # noqa: E402
from kidata.training.determinism import deterministic_algorithms  # noqa: E402


def test_the_block_runs_deterministic_kernels_with_a_fixed_cublas_workspace_and_restores_both(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.backends.cudnn.deterministic


def test_off_by_default_it_changes_nothing(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with deterministic_algorithms(TrainConfig.load("model/ki_tiny.toml").train.deterministic):
        assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_nondeterministic_cublas_workspace_in_the_environment_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ValueError) as error:
        with deterministic_algorithms(True):
            pass
    assert str(error.value) == ("train.deterministic needs CUBLAS_WORKSPACE_CONFIG in (':4096:8', ':16:8'), but the "
                                "environment sets ':0:0': unset it or set one of those")
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_trainer_runs_under_deterministic_algorithms_when_the_config_asks(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    monkeypatch.setattr(trainer, "_train", lambda *args: seen.append(
        (torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))) or {})
    trainer.train(load("ki_tiny", {"train": {"deterministic": True}}), tmp_path)
    trainer.train(TrainConfig.load("model/ki_tiny.toml"), tmp_path)
    assert seen == [(True, ":4096:8"), (False, None)]
    assert not torch.are_deterministic_algorithms_enabled()
