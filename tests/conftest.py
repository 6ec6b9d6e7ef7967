"""Fixtures shared by the test modules; the plain helpers they build on live in tests/support/."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.data import shared_path

pytest_plugins = ["ci_strict", "pytester"]

@pytest.fixture
def hub_offline(monkeypatch):
    """Hub calls fail at once rather than after network retries. huggingface_hub reads HF_HUB_OFFLINE once, at
    import: in the full suite, where an earlier test has imported it, the variable alone was ignored and each such
    test spent 46 s in retries (`make test --durations`), so the module's constant is set as well."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def fast_plus_dir() -> Path:
    return shared_path("reference", "fast_universal")


@pytest.fixture(scope="session")
def fast_plus(fast_plus_dir):
    from kidata.tokenizers.fast import FastTokenizer

    return FastTokenizer.load(fast_plus_dir)


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> str:
    """The manifest of the Bridge + VQAv2 build the tiny training runs use (support.training.build_mixture)."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")
    from support.training import build_mixture

    return build_mixture(tmp_path_factory.mktemp("mixture"))
