"""The knowledge base behind ``frequently_asked``: interface, scoring, FAQ files.

:class:`KnowledgeBase` is the interface; :class:`~chatd.stores.kb_sqlite.
SQLiteKnowledgeBase` the embedded implementation and :class:`~chatd.stores.
kb_arango.ArangoKnowledgeBase` the production one. The parts every backend
shares live here and do no I/O: how user text becomes search terms, how sure
a match is (:func:`confidence`), and reading FAQ files.
:func:`open_knowledge_base` picks the backend from :class:`~chatd.config.
KBSettings` and seeds an empty one with the sample FAQ.
"""

from __future__ import annotations

import csv
import importlib.resources
import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import orjson
import structlog
import trio

from chatd.config import KBSettings
from chatd.exceptions import ConfigError, UpstreamError, UpstreamUnavailable

__all__ = [
    "MAX_QUERY_TERMS",
    "FAQEntry",
    "KBCounters",
    "KBStatistics",
    "KnowledgeBase",
    "Passage",
    "confidence",
    "load_faq_file",
    "open_knowledge_base",
    "query_terms",
    "sample_faq",
    "term_weight",
]

log = structlog.get_logger(__name__)


@attrs.frozen
class FAQEntry:
    """One question and its answer, with optional tags (keywords, synonyms)."""

    question: str
    answer: str
    tags: tuple[str, ...] = ()


@attrs.frozen
class Passage:
    """A search hit: the entry, its BM25 ``score`` (higher is better) and a
    ``confidence`` in [0, 1] that it answers the query (see :func:`confidence`)."""

    question: str
    answer: str
    tags: tuple[str, ...]
    score: float
    confidence: float


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

    def statistics(self) -> KBStatistics:
        """Counters and worker-thread use, without touching the database."""
        ...


# --- From user text to search terms ------------------------------------------------------

# Words that say nothing about *which* FAQ entry is meant: function words, the
# question scaffolding every FAQ shares ("how do I", "can you"), pieces of
# contractions ("don't" splits into "don" and "t", as SQLite's unicode61 splits
# it), filler adverbs and light verbs ("take", "make"). Dropping them keeps
# BM25 from rewarding an entry for sharing "how" with the query, and keeps them
# out of the coverage share. "where", "when" and "why" stay: they tell "Where
# is my order?" from "Why was my order cancelled?", as do the particles of
# phrasal verbs ("sign up", "log out", "turn off"). Kept as text: a list would
# take 150 lines.
_STOP_WORDS_TEXT = """
    a about above after again against all also am an and any anyone anything are aren as
    at be because been before being below between both but by can cannot could couldn d
    did didn do does doesn doing don down during each either else even ever every few for
    from further get gets getting got had hadn has hasn have haven having he hello her
    here hers herself hi him himself his how i if in into is isn it its itself just ll m
    may me might mine more most much must mustn my myself need needs no nor not now o of
    oh ok okay on once one only or other ought our ours ourselves over own please
    pls possible re really s same say shall shan she should shouldn so some somebody
    someone something still such t tell than thank thanks that the their theirs them
    themselves then there these they this those though through thx to too u under until
    upon us ve very via want wanna wants was wasn way we were weren what whats which
    while who whom whose will with won would wouldn y yes yet you your yours yourself
    yourselves able go going know let lets like make take two three four five
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

MAX_QUERY_TERMS = 32
"""Significant terms kept from one query: bounds the work a long message causes."""

# unicode61 splits on everything that is not a letter, a digit or a private-use
# character; underscore is punctuation to it. Splitting the same way keeps each
# term one token, so quoting it gives a one-token FTS string and never a phrase.
_TOKEN = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """The significant terms of ``text``: lower-cased, stop words removed,
    each once, in order, at most :data:`MAX_QUERY_TERMS`."""
    terms: dict[str, None] = {}
    for token in _TOKEN.findall(text.casefold()):
        if token not in STOP_WORDS:
            terms.setdefault(token, None)
            if len(terms) == MAX_QUERY_TERMS:
                break
    return list(terms)


def term_weight(document_frequency: int, documents: int) -> float:
    """BM25's inverse document frequency: rare terms say more about the
    entry meant than common ones; a term no entry has weighs most of all."""
    df = min(document_frequency, documents)
    return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))


def confidence(coverage: float, fit: float, score: float, runner_up: float | None) -> float:
    """How sure we are that a passage answers the query: ``coverage * max(fit, margin)``.

    ``coverage`` asks whether the entry holds what was asked: the IDF-weighted
    share of the query's significant terms found in the entry, full credit in
    its question or tags, half credit only in its answer. An entry missing the
    query's rare words is about something else, however BM25 ranks it among
    poor candidates ("who won the 1998 world cup?" scores low everywhere).

    The second factor asks whether *this* entry, not a neighbour, is meant;
    either of two signs suffices. ``fit`` is the share of the entry question's
    significant terms that the query accounts for, at most 1: each query term
    found in the question counts 1, found only in the tags (synonyms) 1/2.
    "reset my password" fits "How do I reset my password?" fully and "I
    didn't get the password reset email." by two thirds. ``margin``, the
    BM25 lead over the next candidate, ``(score - runner_up) / score`` (1 when
    there is none), lets a paraphrase that shares few words with the entry's
    question still single it out. A query whose words several entries share
    equally ("how much is delivery?") has neither and stays low.
    """
    if score <= 0.0:
        return 0.0
    margin = 1.0 if runner_up is None else (score - runner_up) / score
    distinct = max(0.0, min(1.0, max(fit, margin)))
    return max(0.0, min(1.0, coverage * distinct))


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
            rows = _csv_rows(file, path) if suffix == ".csv" else _jsonl_rows(file, path)
            return [_entry(row, path, line) for line, row in rows]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _jsonl_rows(lines: Iterator[str], path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
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


# --- Choosing and seeding a backend ------------------------------------------------------


@asynccontextmanager
async def open_knowledge_base(
    settings: KBSettings, *, seed: bool = True
) -> AsyncIterator[KnowledgeBase]:
    """Open the configured knowledge base, closing it on exit.

    With ``seed``, an empty knowledge base is loaded with the sample FAQ, so
    a first start answers real questions. A store that cannot be opened is a
    :class:`ConfigError` naming ``kb.path`` (SQLite) or ``kb.arango_url``
    (ArangoDB). Backends are imported only when chosen (the ArangoDB one
    needs python-arango).
    """
    opened: AbstractAsyncContextManager[KnowledgeBase]
    if settings.backend == "arango":
        if settings.arango_url is None:
            raise ConfigError(
                "kb.arango_url = None: expected an http(s):// URL for kb.backend 'arango'"
            )
        from chatd.stores.kb_arango import open_arango_knowledge_base

        opened = open_arango_knowledge_base(settings)
        key, where = "kb.arango_url", settings.arango_url
        store = {"url": where, "database": settings.arango_database}
    else:
        from chatd.stores.kb_sqlite import open_sqlite_knowledge_base

        opened = open_sqlite_knowledge_base(settings.path)
        key, where = "kb.path", settings.path
        store = {"path": where}

    async with AsyncExitStack() as stack:
        try:
            kb: KnowledgeBase = await stack.enter_async_context(opened)
            if seed and await kb.count() == 0:
                entries = await trio.to_thread.run_sync(sample_faq)
                added = await kb.add(entries)
                log.info(
                    "loaded the sample FAQ into an empty knowledge base", **store, entries=added
                )
        except (UpstreamUnavailable, UpstreamError) as exc:
            # sqlite3's own message is the clearest; ArangoDB's errors are already one line.
            reason = exc.__cause__ if settings.backend == "sqlite" and exc.__cause__ else exc
            raise ConfigError(f"{key} = {where!r}: cannot open ({reason})") from exc
        yield kb
