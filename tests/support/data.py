"""The real test data under ../shared, read in place and never copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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
