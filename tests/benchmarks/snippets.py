"""Checks on the text of a rendered report."""

from __future__ import annotations


def assert_contains(text: str, *snippets: str) -> None:
    """Every snippet is somewhere in ``text``; a failure names each one missing."""
    missing = [snippet for snippet in snippets if snippet not in text]
    assert not missing, f"not in the text: {missing!r}\n--- the text ---\n{text}"
