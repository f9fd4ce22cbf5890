"""What every knowledge base shares, with no I/O: the :class:`KnowledgeBase`
interface, its entries and statistics, and reading FAQ files. How user text
becomes search terms and how sure a match is are :mod:`chatd.stores.kb.rank`'s.
"""

from __future__ import annotations

import csv
import importlib.resources
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import orjson
import trio

from chatd.exceptions import ConfigError
from chatd.stores.kb.rank import Passage

__all__ = [
    "FAQEntry",
    "KBCounters",
    "KBStatistics",
    "KnowledgeBase",
    "Passage",
    "jsonl_rows",
    "load_faq_file",
    "sample_faq",
]


@attrs.frozen
class FAQEntry:
    """One question and its answer, with optional tags (keywords, synonyms)."""

    question: str
    answer: str
    tags: tuple[str, ...] = ()


@attrs.frozen
class KBStatistics:
    """What a knowledge base has done, and how busy its worker threads are.

    ``entries`` is the count last seen (at open, ``add`` or ``count``);
    ``threads_peak`` is the most DB calls ever running at once, which never
    exceeds ``threads_total``; ``connections`` are those open now.
    """

    backend: str
    entries: int
    searches: int
    added: int
    errors: int
    threads_busy: int
    threads_total: int
    threads_waiting: int
    threads_peak: int
    connections: int


@attrs.define
class KBCounters:
    """What a store counts, and its :class:`KBStatistics` with its limiter's use."""

    entries: int = 0
    searches: int = 0
    added: int = 0
    errors: int = 0
    peak: int = 0
    """The most calls ever running at once in the store's worker threads."""

    def statistics(
        self, backend: str, limiter: trio.CapacityLimiter, connections: int
    ) -> KBStatistics:
        """These counts, the limiter's use now, and ``connections``."""
        used = limiter.statistics()
        return KBStatistics(
            backend=backend,
            entries=self.entries,
            searches=self.searches,
            added=self.added,
            errors=self.errors,
            threads_busy=used.borrowed_tokens,
            threads_total=int(used.total_tokens),
            threads_waiting=used.tasks_waiting,
            threads_peak=self.peak,
            connections=connections,
        )


class KnowledgeBase(Protocol):
    """FAQ entries searchable by free text."""

    async def search(self, query: str, limit: int = 3) -> list[Passage]:
        """The best ``limit`` entries for ``query``, best first; [] when the
        query has no significant terms or nothing matches."""
        ...

    async def add(self, entries: Sequence[FAQEntry]) -> int:
        """Add entries, replacing those with the same question (ignoring case);
        returns how many were new or changed."""
        ...

    async def count(self) -> int:
        """How many entries there are."""
        ...

    async def version(self) -> str:
        """A value that changes whenever the entries do, by whoever changes
        them (``chatd kb load`` from another process too): answers that
        depended on the old entries are keyed on it."""
        ...

    def statistics(self) -> KBStatistics:
        """Counters and worker-thread use, without touching the database."""
        ...


# --- FAQ files ---------------------------------------------------------------------------


def sample_faq() -> list[FAQEntry]:
    """The sample FAQ shipped with chatd (the "chatd demo store")."""
    resource = importlib.resources.files("chatd.data").joinpath("faq.jsonl")
    with importlib.resources.as_file(resource) as path:
        return load_faq_file(path)


def load_faq_file(path: str | Path) -> list[FAQEntry]:
    """Read FAQ entries from JSON Lines (``.jsonl``, ``.json``) or CSV (``.csv``).

    Each row has ``question``, ``answer`` and optionally ``tags``: a list of
    strings in JSON, a comma- or semicolon-separated string in CSV. Blank
    lines are skipped. A bad row raises :class:`ConfigError` naming the file,
    the line and the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise ConfigError(f"{path}: expected a .jsonl, .json or .csv file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            rows = _csv_rows(file, path) if suffix == ".csv" else jsonl_rows(file, path)
            return [_entry(row, path, line) for line, row in rows]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def jsonl_rows(lines: Iterable[str], path: Path | str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Each non-blank line's number and JSON object; a line that is not one
    raises :class:`ConfigError` naming ``path`` and the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object (one per line)")
        yield number, row


def _csv_rows(lines: Iterator[str], path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames
        if header is None:
            return
        missing = [name for name in ("question", "answer") if name not in header]
        if missing:
            raise ConfigError(f"{path}:1: header lacks column {', '.join(missing)}")
        for row in reader:
            # line_num is the record's last line; a quoted field may span lines.
            newlines = sum(v.count("\n") for v in row.values() if isinstance(v, str))
            start = reader.line_num - newlines
            if None in row:
                raise ConfigError(f"{path}:{start}: more fields than the header names")
            if any(value.strip() for value in row.values() if value is not None):
                tags = row.get("tags") or ""
                yield start, {**row, "tags": [t for t in re.split(r"[,;]", tags) if t.strip()]}
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: {exc}") from exc


def _entry(row: Mapping[str, Any], path: Path, line: int) -> FAQEntry:
    fields: dict[str, str] = {}
    for name in ("question", "answer"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}:{line}: {name!r} must be a non-empty string")
        fields[name] = " ".join(value.split())
    tags = row.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ConfigError(f"{path}:{line}: 'tags' must be a list of strings")
    cleaned = tuple(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))
    return FAQEntry(fields["question"], fields["answer"], cleaned)
