"""The embedded knowledge base: SQLite with an FTS5 index, ranked by BM25.

sqlite3 blocks, so every call runs in a worker thread through
``trio.to_thread.run_sync`` with this knowledge base's own CapacityLimiter:
at most ``threads`` calls at once, whatever else uses trio's threads.

Connections come from a small pool rather than one per thread. trio's worker
threads are cached but not pinned, so a connection per thread would be opened
by every thread that ever ran a call and could not be closed from the thread
that opened it once that thread is gone. Instead a worker takes an idle
connection (or opens one), uses it alone and puts it back. The limiter keeps
at most ``threads`` workers running, so at most ``threads`` connections ever
exist, and each is used by one thread at a time, which is the condition under
which ``check_same_thread=False`` is safe. WAL mode lets readers run while a
writer writes. Calls are not abandoned on cancellation (trio's default): a
cancelled search waits the milliseconds its query takes, so no thread still
holds a connection when :meth:`SQLiteKnowledgeBase.aclose` closes them.

No ``sqlite3`` exception leaves this module: errors that may pass (busy,
locked, cannot open, I/O, disk full) become :class:`UpstreamUnavailable`,
the rest :class:`UpstreamError`, each raised ``from`` the original.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import orjson
import trio

from chatd.exceptions import ChatdError, UpstreamError, UpstreamUnavailable
from chatd.resilience.cleanup import close_in_thread
from chatd.stores.kb.base import FAQEntry, KBCounters, KBStatistics
from chatd.stores.kb.rank import CANDIDATES, Candidate, Passage, query_terms, rank

__all__ = ["SQLiteKnowledgeBase", "open_sqlite_knowledge_base"]

T = TypeVar("T")

# The FTS index is an external-content table over ``faq``, kept in step by
# triggers (the pattern of SQLite's FTS5 documentation), so ``faq`` can have a
# real UNIQUE constraint and ``add`` can be an upsert.
_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS faq (
    id INTEGER PRIMARY KEY,
    question TEXT NOT NULL UNIQUE COLLATE NOCASE,
    answer TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]'
);
CREATE VIRTUAL TABLE IF NOT EXISTS faq_fts USING fts5(
    question, answer, tags, content = 'faq', content_rowid = 'id',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS faq_fts_insert AFTER INSERT ON faq BEGIN
    INSERT INTO faq_fts (rowid, question, answer, tags)
    VALUES (new.id, new.question, new.answer, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS faq_fts_delete AFTER DELETE ON faq BEGIN
    INSERT INTO faq_fts (faq_fts, rowid, question, answer, tags)
    VALUES ('delete', old.id, old.question, old.answer, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS faq_fts_update AFTER UPDATE ON faq BEGIN
    INSERT INTO faq_fts (faq_fts, rowid, question, answer, tags)
    VALUES ('delete', old.id, old.question, old.answer, old.tags);
    INSERT INTO faq_fts (rowid, question, answer, tags)
    VALUES (new.id, new.question, new.answer, new.tags);
END;
PRAGMA user_version = 1;
CREATE TABLE IF NOT EXISTS kb_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO kb_meta (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS faq_version_insert AFTER INSERT ON faq BEGIN
    UPDATE kb_meta SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS faq_version_update AFTER UPDATE ON faq BEGIN
    UPDATE kb_meta SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS faq_version_delete AFTER DELETE ON faq BEGIN
    UPDATE kb_meta SET version = version + 1;
END;
COMMIT;
"""

# Column weights for bm25(): question, answer, tags. The question says what
# an entry is about; tags are its curated synonyms; the answer mentions much.
_RANK = "bm25(faq_fts, 4.0, 1.0, 2.0)"
_SEARCH = f"""
SELECT rowid, question, answer, tags, -{_RANK} AS score
FROM faq_fts WHERE faq_fts MATCH ? ORDER BY score DESC LIMIT ?
"""
_UPSERT = """
INSERT INTO faq (question, answer, tags) VALUES (?, ?, ?)
ON CONFLICT (question) DO UPDATE SET answer = excluded.answer, tags = excluded.tags
WHERE answer != excluded.answer OR tags != excluded.tags
"""
_COUNT = "SELECT count(*) FROM faq"

# Primary result codes that say "not now" rather than "broken".
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
    }
)


def _translate(exc: sqlite3.Error, path: str) -> ChatdError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE:
        return UpstreamUnavailable(f"knowledge base {path}: {exc}", retry_after_ms=1000)
    return UpstreamError(f"knowledge base {path}: {exc}")


def _fts_term(term: str) -> str:
    """One quoted FTS5 string. Quoting makes AND, OR, NOT, NEAR, ``*``, ``^``,
    ``:`` and parentheses plain text; a doubled quote is FTS5's escape. Terms
    of four characters or more match as prefixes of the stemmed form, so
    "delivery" also finds "delivered" and "shipping" finds "shipment"."""
    quoted = '"' + term.replace('"', '""') + '"'
    return quoted + "*" if len(term) >= 4 else quoted


def _document_frequency(conn: sqlite3.Connection, fts_term: str) -> int:
    """How many entries hold the term in their question or tags."""
    query = "SELECT count(*) FROM faq_fts WHERE faq_fts MATCH ?"
    (count,) = conn.execute(query, (f"{{question tags}} : {fts_term}",)).fetchone()
    return int(count)


def _search(conn: sqlite3.Connection, terms: Sequence[str], limit: int) -> list[Passage]:
    """BM25's candidates and each term's document frequency (one thread hop),
    ranked and scored by :func:`~chatd.stores.kb.rank.rank`."""
    fts_terms = [_fts_term(term) for term in terms]
    rows = conn.execute(_SEARCH, (" OR ".join(fts_terms), max(limit, CANDIDATES))).fetchall()
    if not rows:
        return []
    (documents,) = conn.execute(_COUNT).fetchone()
    frequencies = [_document_frequency(conn, fts_term) for fts_term in fts_terms]
    candidates = [
        Candidate(question, answer, tuple(orjson.loads(tags)), float(score))
        for _, question, answer, tags, score in rows
    ]
    return rank(terms, candidates, frequencies, documents, limit)


def _add(conn: sqlite3.Connection, entries: Sequence[FAQEntry]) -> tuple[int, int]:
    rows = [(e.question, e.answer, orjson.dumps(list(e.tags)).decode()) for e in entries]
    with conn:
        changed = conn.executemany(_UPSERT, rows).rowcount
    (count,) = conn.execute(_COUNT).fetchone()
    return changed, count


def _version(conn: sqlite3.Connection) -> str:
    (version,) = conn.execute("SELECT version FROM kb_meta").fetchone()
    return str(version)


def _count(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute(_COUNT).fetchone()
    return int(count)


def _set_up(conn: sqlite3.Connection) -> int:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_SCHEMA)
    return _count(conn)


@attrs.define
class _ConnectionPool:
    """Idle connections to one database file; see the module docstring."""

    path: str
    _idle: list[sqlite3.Connection] = attrs.field(factory=list, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    open_count: int = attrs.field(default=0, init=False)

    def take(self) -> sqlite3.Connection:
        """An idle connection, or a new one (called in a worker thread)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self.open_count += 1
        return conn

    def give_back(self, conn: sqlite3.Connection, *, broken: bool = False) -> None:
        """Return ``conn`` for reuse; close it if it failed or the pool is closed."""
        with self._lock:
            if not (broken or self._closed):
                self._idle.append(conn)
                return
            self.open_count -= 1
        conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close as they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self.open_count -= len(idle)
        for conn in idle:
            conn.close()


@attrs.define
class SQLiteKnowledgeBase:
    """A :class:`~chatd.stores.kb.KnowledgeBase` in one SQLite file.

    Use :func:`open_sqlite_knowledge_base`, which creates the schema and
    closes the connections on exit. ``threads`` bounds the DB calls (and so
    the connections) at once.
    """

    path: str
    threads: int = 4
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _pool: _ConnectionPool = attrs.field(init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _counts: KBCounters = attrs.field(factory=KBCounters, init=False)
    _busy: int = attrs.field(default=0, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.threads)
        self._pool = _ConnectionPool(self.path)

    async def set_up(self) -> None:
        """Switch to WAL mode and create the schema if it is missing."""
        self._counts.entries = await self._run(_set_up)

    async def search(self, query: str, limit: int = 3) -> list[Passage]:
        """Entries ranked by BM25 over the query's significant terms, with confidence."""
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        self._counts.searches += 1
        return await self._run(lambda conn: _search(conn, terms, limit))

    async def add(self, entries: Sequence[FAQEntry]) -> int:
        """Insert or update by question (ignoring case); returns how many changed."""
        if not entries:
            return 0
        batch = list(entries)
        changed, self._counts.entries = await self._run(lambda conn: _add(conn, batch))
        self._counts.added += changed
        return changed

    async def count(self) -> int:
        """How many entries there are."""
        self._counts.entries = await self._run(_count)
        return self._counts.entries

    async def version(self) -> str:
        """A counter the database's triggers bump on every change of an entry."""
        return await self._run(_version)

    def statistics(self) -> KBStatistics:
        """Counters and the limiter's use; ``threads_peak`` is measured in the workers."""
        return self._counts.statistics("sqlite", self._limiter, self._pool.open_count)

    async def aclose(self) -> None:
        """Close every connection; later calls raise ``trio.ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        # Through the limiter: no query is running when the pool closes (calls
        # are never abandoned, see the module docstring).
        await close_in_thread("sqlite connections", self._pool.close, limiter=self._limiter)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise trio.ClosedResourceError("the knowledge base is closed")
        return await trio.to_thread.run_sync(
            self._in_worker, work, limiter=self._limiter, thread_name="chatd kb"
        )

    def _in_worker(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self._busy += 1
            self._counts.peak = max(self._counts.peak, self._busy)
        try:
            conn = self._pool.take()
            try:
                result = work(conn)
            except BaseException:
                self._pool.give_back(conn, broken=True)
                raise
            self._pool.give_back(conn)
            return result
        except sqlite3.Error as exc:
            with self._lock:
                self._counts.errors += 1
            raise _translate(exc, self.path) from exc
        finally:
            with self._lock:
                self._busy -= 1


@asynccontextmanager
async def open_sqlite_knowledge_base(
    path: str, *, threads: int = 4
) -> AsyncIterator[SQLiteKnowledgeBase]:
    """Open (creating if needed) the knowledge base in the SQLite file ``path``."""
    kb = SQLiteKnowledgeBase(path, threads)
    try:
        await kb.set_up()
        yield kb
    finally:
        await kb.aclose()
