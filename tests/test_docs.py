"""Records say when and at which commit a figure was measured, not "session N"."""

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def test_results_name_dates_and_commits_not_sessions():
    text = RESULTS.read_text()
    assert not re.search(r"session \d", text, flags=re.IGNORECASE)
    assert re.search(r"2026-11-23, commit [0-9a-f]{7}", text)
