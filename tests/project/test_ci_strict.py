"""CI cannot skip silently: a missing extra or data folder fails the run under any truthy CI."""

from __future__ import annotations

import pytest

MISSING_EXTRA = """
import pytest
pytest.importorskip("a_module_no_one_installed", reason="needs the 'nothing' extra")

def test_never_runs():
    pass
"""


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes"])
def test_a_skip_fails_the_session_under_a_truthy_ci(pytester, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    pytester.makepyfile(test_extra=MISSING_EXTRA)
    result = pytester.runpytest("-p", "ci_strict", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped under CI: each is a failure*", "*needs the 'nothing' extra*"])


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_outside_ci_a_skip_stays_a_skip(pytester, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    pytester.makepyfile(test_extra=MISSING_EXTRA, test_other="def test_runs():\n    pass\n")
    result = pytester.runpytest("-p", "ci_strict", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_a_missing_shared_folder_fails_its_test_under_ci(monkeypatch):
    from support import data

    monkeypatch.setenv("CI", "1")
    monkeypatch.setattr(data, "SHARED", data.REPO / "no-such-shared-folder")
    with pytest.raises(pytest.fail.Exception, match="CI=1: a missing ../shared is an error"):
        data.shared_path("data")
