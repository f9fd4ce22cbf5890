"""The comparison with the Go reference: verdicts and the report (benchmarks/vs_go.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vs_go


@pytest.mark.parametrize(
    ("figure", "row", "bound", "verdict"),
    [
        ("server CPU s / 1k tokens", {"ratio": 1.99}, 2.0, "met"),
        ("server CPU s / 1k tokens", {"ratio": 2.01}, 2.0, "not met"),
        ("client TTFT p99 ms", {"ratio": None}, 1.15, "not met"),  # a run that failed
        ("errors", {"chatd": 0, "ratio": None}, 0, "met"),
        ("errors", {"chatd": 3}, 0, "not met"),
        ("chats done", {"ratio": 1.0}, 1.0, "met"),
        ("chats done", {"ratio": 0.51}, 1.0, "not met"),
    ],
)
def test_verdicts(figure: str, row: dict[str, float | None], bound: float, verdict: str) -> None:
    """Ratios at most their bound; no errors; every chat done; no figure, no verdict."""
    assert vs_go.verdict(figure, row, bound) == verdict


def test_the_report_of_the_record_puts_the_targets_first() -> None:
    """The committed record renders: every target a row with its ratio and verdict."""
    record = Path(vs_go.__file__).parent / "results" / "vs-go.json"
    payload = json.loads(record.read_text())
    report = vs_go.render(payload)
    table = report.split("## Every figure")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == sum(len(load[3]) for load in vs_go.LOADS)
    assert all(line.rstrip(" |").split("|")[5].strip() in ("met", "not met") for line in rows)
    assert f"Commit {payload['commit']}" in report
