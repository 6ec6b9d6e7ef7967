"""The repository reads as a manual: the README stays short, and no file says which round of work
found what (comments, presets and results say why in terms of the code and the data)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDINALS = ("first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
            "fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|\\d+(?:st|nd|rd|th)")
# "the eighth session", "this session's", "earlier sessions", "sessions 1-16", "round two"; pytest's own
# session (fixtures, hooks, "fails the session") is not a round of work
WORK_LOG = re.compile(rf"\b(?:(?:{ORDINALS})(?:\s+and\s+(?:{ORDINALS}))?\s+sessions?|(?:this|that|next|previous|earlier|"
                      rf"later|last)\s+sessions?\b|sessions?\s+\d|round (?:one|two|three|four|\d))", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    suffixes = {".py", ".md", ".toml", ".txt", ".yml", ".yaml", ".sh", ".in", ".cfg", ""}
    return [ROOT / name for name in names.splitlines() if Path(name).suffix in suffixes and (ROOT / name).is_file()]


def test_no_file_of_the_repository_says_which_round_of_work_found_what():
    found = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue  # this file names the phrases to test the pattern
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(ROOT)}: {match.group(0)!r}" for match in WORK_LOG.finditer(text)]
    assert found == []


@pytest.mark.parametrize("phrase", ["the eighth session found", "Fourteenth and fifteenth sessions", "this session's changes",
                                    "the evidence of sessions 1-16", "round two", "the 3rd session"])
def test_the_work_log_pattern_catches_the_phrases_it_names(phrase):
    assert WORK_LOG.search(phrase)


@pytest.mark.parametrize("phrase", ["@pytest.fixture(scope=\"session\")", "fails the session under CI", "start_new_session=True",
                                    "an eighth of the span", "around one invariant"])
def test_the_work_log_pattern_leaves_pytest_sessions_and_fractions_alone(phrase):
    assert not WORK_LOG.search(phrase)


def test_the_readme_is_a_short_manual():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 450
