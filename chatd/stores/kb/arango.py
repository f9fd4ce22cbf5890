"""The production knowledge base: ArangoDB, an ArangoSearch view, ranked by BM25.

python-arango is synchronous and does not run on trio, so every call runs in a
worker thread through ``trio.to_thread.run_sync`` under this knowledge base's
CapacityLimiter of ``kb.threads``. The HTTP pool is sized to the same number
(requests keeps 10 connections by default; more threads than that would open
and drop connections all the time), and each request gives up after
``kb.timeout_s`` (``max_runtime`` also stops the query on the server), since
a thread cannot be interrupted. Nothing is retried here: a failure is reported
at once and the ``kb`` circuit breaker above decides what happens next.

Entries live in one collection, keyed by a hash of the case-folded question,
so ``add`` is an ``UPSERT`` and "the same question ignoring case" is the same
document. A view ``<collection>_view`` indexes question, answer and tags with
the built-in ``text_en`` analyzer (lower case, accents removed, Snowball
stemming: the counterpart of SQLite's ``porter unicode61``), present in every
database, so none needs creating. The database, the collection and the view
are created at open when missing; an existing view is used as it is.

A search is one AQL query, one thread hop. It finds candidates by BM25 with
the weights of the SQLite backend, terms of four characters or more matching
as prefixes of their stem, as there, and counts each term's document
frequency; :func:`~chatd.stores.kb.rank.rank` orders and scores them exactly
as it does for the SQLite backend. User text only ever travels in bind
variables.

Views are eventually consistent (committed about once a second), so ``add``
waits for the view to catch up before it returns: a search right after it
sees what was added.

No python-arango or requests exception leaves this module: a server that
cannot be reached, times out or is overloaded is :class:`UpstreamUnavailable`,
any other error :class:`UpstreamError`, each raised ``from`` the original.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import arango.errno as errno
import attrs
import requests
import trio
from arango.client import ArangoClient
from arango.database import StandardDatabase
from arango.exceptions import ArangoError, ArangoServerError
from arango.http import DefaultHTTPClient
from arango.job import AsyncJob, BatchJob
from arango.response import Response
from arango.result import Result
from requests.adapters import HTTPAdapter

from chatd.config import KBSettings
from chatd.exceptions import ChatdError, UpstreamError, UpstreamUnavailable
from chatd.resilience.cleanup import CLOSE_WITHIN_S, close_in_thread
from chatd.stores.kb.arango_aql import (
    ADD,
    ANALYZER,
    FIELDS,
    SYNC_VIEW,
    documents,
    passages,
    search_query,
)
from chatd.stores.kb.base import FAQEntry, KBCounters, KBStatistics
from chatd.stores.kb.rank import Passage, query_terms

__all__ = ["ArangoKnowledgeBase", "open_arango_knowledge_base"]

T = TypeVar("T")

# Server answers that say "not now" rather than "broken".
_UNAVAILABLE_STATUS = frozenset({408, 429, 503, 504})
_UNAVAILABLE_ERRNO = frozenset(
    {
        errno.CONFLICT,
        errno.LOCK_TIMEOUT,
        errno.SHUTTING_DOWN,
        errno.QUERY_KILLED,  # max_runtime ran out
        errno.CLUSTER_TIMEOUT,
        errno.QUEUE_TIME_REQUIREMENT_VIOLATED,
    }
)


def _translate(exc: Exception) -> ChatdError:
    """A chatd error for what python-arango or requests raised."""
    if isinstance(exc, ArangoServerError):
        if exc.http_code in _UNAVAILABLE_STATUS or exc.error_code in _UNAVAILABLE_ERRNO:
            return UpstreamUnavailable(f"ArangoDB is busy: {exc}", retry_after_ms=1000)
        return UpstreamError(f"ArangoDB failed: {exc}")
    if isinstance(exc, ArangoError):  # raised by python-arango itself
        return UpstreamError(f"ArangoDB failed: {exc}")
    # _NoAnswer from requests' errors, which wrap the one line that says what
    # happened ("[Errno 111] Connection refused", "timed out"); or python-
    # arango's ConnectionAbortedError after a 503.
    root: BaseException = exc
    while (inner := root.__cause__ or root.__context__) is not None:
        root = inner
    reason = str(root) or str(exc)
    return UpstreamUnavailable(f"cannot reach ArangoDB: {reason}", retry_after_ms=1000)


def _value(result: Result[T]) -> T:
    """python-arango types every call as maybe a job; a StandardDatabase
    (no async or batch execution) always returns the value itself."""
    if isinstance(result, (AsyncJob, BatchJob)) or result is None:
        raise TypeError(f"expected a value from python-arango, got {result!r}")
    return result


# --- The store ---------------------------------------------------------------------------


class _NoAnswer(Exception):
    """No answer from ArangoDB (refused, reset, timed out): the requests error is its cause."""


class _HTTPClient(DefaultHTTPClient):
    """python-arango's HTTP client with a pool of ``pool_size`` connections.

    Its own session mounts a plain requests adapter: DefaultHTTPClient's
    retries would sleep between tries and turn a GET answered 500 into a
    ``RetryError``. A requests error is raised as :class:`_NoAnswer`, or
    python-arango would catch it, try again and then raise a
    ``ConnectionAbortedError`` that has lost the reason ("Connection refused").
    """

    def __init__(self, timeout_s: float, pool_size: int) -> None:
        super().__init__(request_timeout=timeout_s)
        self.adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)

    def create_session(self, host: str) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self.adapter)
        session.mount("https://", self.adapter)
        return session

    def send_request(self, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().send_request(*args, **kwargs)
        except requests.RequestException as exc:
            raise _NoAnswer(str(exc)) from exc

    def connections_opened(self) -> int:
        """Connections the pool has opened so far (urllib3 counts, never uncounts)."""
        pools = self.adapter.poolmanager.pools
        opened = 0
        # keys() is a copy taken under the container's lock; iterating it raises.
        for key in pools.keys():  # noqa: SIM118
            pool = pools.get(key)
            if pool is not None:
                opened += pool.num_connections
        return opened


def _set_up(client: ArangoClient, settings: KBSettings, view: str) -> int:
    """Create what is missing (database, collection, view); return the entry count."""
    password = settings.arango_password or ""
    db = client.db(settings.arango_database, settings.arango_username, password)
    try:
        collections = {c["name"] for c in _value(db.collections())}
    except ArangoServerError as exc:
        if exc.error_code != errno.DATABASE_NOT_FOUND:
            raise
        system = client.db("_system", settings.arango_username, password)
        _unless_exists(lambda: system.create_database(settings.arango_database))
        collections = set()
    if settings.arango_collection not in collections:
        _unless_exists(lambda: db.create_collection(settings.arango_collection))
    if view not in {v["name"] for v in _value(db.views())}:
        link = {
            "analyzers": [ANALYZER],
            "includeAllFields": False,
            "fields": {field: {} for field, _ in FIELDS},
        }
        properties = {"links": {settings.arango_collection: link}}
        _unless_exists(lambda: db.create_arangosearch_view(view, properties))
    return _value(db.collection(settings.arango_collection).count())


def _unless_exists(create: Callable[[], object]) -> None:
    """Create something, unless another instance has just done so."""
    try:
        create()
    except ArangoServerError as exc:
        if exc.error_code != errno.DUPLICATE_NAME:
            raise


@attrs.define
class ArangoKnowledgeBase:
    """A :class:`~chatd.stores.kb.KnowledgeBase` in ArangoDB.

    Use :func:`open_arango_knowledge_base`, which creates what is missing and
    closes the HTTP pool on exit. ``settings.threads`` bounds the calls (and so
    the connections) at once.
    """

    settings: KBSettings
    _http: _HTTPClient = attrs.field(init=False)
    _client: ArangoClient = attrs.field(init=False)
    _db: StandardDatabase = attrs.field(init=False)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _counts: KBCounters = attrs.field(factory=KBCounters, init=False)
    _busy: int = attrs.field(default=0, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        if self.settings.arango_url is None:
            raise ValueError("ArangoKnowledgeBase needs kb.arango_url")
        threads = self.settings.threads
        self._limiter = trio.CapacityLimiter(threads)
        self._http = _HTTPClient(self.settings.timeout_s, pool_size=threads)
        # resolver_max_tries=1: python-arango tries three times when a server
        # answers 503 "unavailable"; the breaker above decides about retrying.
        self._client = ArangoClient(
            hosts=self.settings.arango_url, http_client=self._http, resolver_max_tries=1
        )
        self._db = self._client.db(
            self.settings.arango_database,
            self.settings.arango_username,
            self.settings.arango_password or "",
        )

    @property
    def view(self) -> str:
        """The ArangoSearch view over the collection."""
        return f"{self.settings.arango_collection}_view"

    async def set_up(self) -> None:
        """Create the database, collection and view if they are missing."""
        self._counts.entries = await self._run(
            lambda: _set_up(self._client, self.settings, self.view)
        )

    async def search(self, query: str, limit: int = 3) -> list[Passage]:
        """Entries ranked by BM25 over the query's significant terms, with confidence."""
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        self._counts.searches += 1
        aql, bind = search_query(terms, limit)
        bind |= {"@view": self.view, "@collection": self.settings.arango_collection}
        result = await self._run(lambda: self._query(aql, bind)[0])
        return passages(result, terms, limit)

    async def add(self, entries: Sequence[FAQEntry]) -> int:
        """Insert or update by question (ignoring case); returns how many changed."""
        if not entries:
            return 0
        docs = documents(entries)
        changed, self._counts.entries = await self._run(lambda: self._add(docs))
        self._counts.added += changed
        return changed

    async def count(self) -> int:
        """How many entries there are."""
        collection = self._db.collection(self.settings.arango_collection)
        self._counts.entries = await self._run(lambda: _value(collection.count()))
        return self._counts.entries

    async def version(self) -> str:
        """The collection's revision, which ArangoDB changes on every write."""
        collection = self._db.collection(self.settings.arango_collection)
        return str(await self._run(lambda: _value(collection.revision())))

    def statistics(self) -> KBStatistics:
        """Counters and the limiter's use. ``connections`` counts those the HTTP
        pool has opened: the pool keeps at most ``threads``, so more means
        ArangoDB closed idle ones and they were opened again."""
        return self._counts.statistics("arango", self._limiter, self._http.connections_opened())

    async def aclose(self) -> None:
        """Close the HTTP pool; later calls raise ``trio.ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        # Through the limiter: a call still running (it ends within timeout_s)
        # finishes before the pool it uses closes.
        await close_in_thread(
            "arangodb connections",
            self._client.close,
            limiter=self._limiter,
            within_s=self.settings.timeout_s + CLOSE_WITHIN_S,
        )

    def _query(self, aql: str, bind: dict[str, Any]) -> list[Any]:
        # python-arango annotates max_runtime as numbers.Number, which no float matches for mypy.
        timeout: Any = self.settings.timeout_s
        cursor = _value(self._db.aql.execute(aql, bind_vars=bind, max_runtime=timeout))
        return list(cursor)

    def _add(self, documents: list[dict[str, Any]]) -> tuple[int, int]:
        collection = self.settings.arango_collection
        changed = self._query(ADD, {"entries": documents, "@collection": collection})
        self._query(SYNC_VIEW, {"@view": self.view})
        return sum(1 for flag in changed if flag), _value(self._db.collection(collection).count())

    async def _run(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise trio.ClosedResourceError("the knowledge base is closed")
        return await trio.to_thread.run_sync(
            self._in_worker, work, limiter=self._limiter, thread_name="chatd kb"
        )

    def _in_worker(self, work: Callable[[], T]) -> T:
        with self._lock:
            self._busy += 1
            self._counts.peak = max(self._counts.peak, self._busy)
        try:
            return work()
        except (ArangoError, _NoAnswer, ConnectionError) as exc:
            with self._lock:
                self._counts.errors += 1
            raise _translate(exc) from exc
        finally:
            with self._lock:
                self._busy -= 1


@asynccontextmanager
async def open_arango_knowledge_base(settings: KBSettings) -> AsyncIterator[ArangoKnowledgeBase]:
    """Open the knowledge base at ``settings.arango_url``, creating what is missing."""
    kb = ArangoKnowledgeBase(settings)
    try:
        await kb.set_up()
        yield kb
    finally:
        await kb.aclose()
