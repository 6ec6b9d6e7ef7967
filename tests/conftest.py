"""Shared fixtures. Data under ../shared is read in place, never copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["ci_strict", "pytester"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips where a user's clone has none, fails under CI (any truthy CI)."""
    from ci_strict import ci_strict

    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} not found: tests on real data need ../shared beside the checkout"
        if ci_strict():
            pytest.fail(message + f" (CI={os.environ['CI']}: a missing ../shared is an error)")
        pytest.skip(message)
    return path


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
