"""Under CI nothing may skip silently: with any truthy ``CI`` (``1``, ``true``, ``TRUE``, ``yes``) a
missing ``../shared`` fails its test, and any skip (a missing extra's ``importorskip``, a missing
tool) fails the session, naming each skipped test and why. Outside CI, skips stay skips."""

from __future__ import annotations

import os

import pytest


def ci_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


class _SkipRecorder:
    """The skips of one pytest session (kept per session: a nested pytester run has its own)."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_collectreport(self, report) -> None:
        if report.skipped:
            self.skipped.append(f"{report.nodeid or '(collection)'}: {_reason(report)}")

    def pytest_runtest_logreport(self, report) -> None:
        if report.skipped:
            self.skipped.append(f"{report.nodeid}: {_reason(report)}")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if ci_strict() and self.skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if ci_strict() and self.skipped:
            terminalreporter.section("skipped under CI: each is a failure")
            for line in self.skipped:
                terminalreporter.line(line)


def pytest_configure(config) -> None:
    config.pluginmanager.register(_SkipRecorder(), f"ci_strict_recorder_{id(config)}")


def _reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
