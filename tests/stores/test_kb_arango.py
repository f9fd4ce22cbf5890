"""What only the ArangoDB knowledge base does, testable without ArangoDB.

The contract suite (test_kb.py) runs against a real server when one is
configured. Here a fake speaking just enough of ArangoDB's HTTP API checks
what happens on the wire: what open creates, the HTTP pool, timeouts and
error translation; the query building and scoring are checked as functions.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from chatd.config import KBSettings
from chatd.exceptions import ConfigError, UpstreamError, UpstreamUnavailable
from chatd.stores.kb import FAQEntry, open_knowledge_base
from chatd.stores.kb.arango import open_arango_knowledge_base
from chatd.stores.kb.arango_aql import documents, entry_key, passages, search_query
from chatd.stores.kb.rank import CANDIDATES, Candidate, rank

TIMEOUT = 20
DB = "/_db/chatd/_api"

Answer = tuple[int, Any] | Callable[[Any], tuple[int, Any]]


class FakeArango(ThreadingHTTPServer):
    """An HTTP server answering ArangoDB API calls from ``routes``; it records
    each call and the client port of each connection."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[tuple[str, str], Answer] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.ports: set[int] = set()
        self.delay_s = 0.0
        self.hang = threading.Event()  # set at the end: handlers that hang return
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve_existing_store(self, count: int = 0) -> None:
        """Answer as a server where database, collection and view exist."""
        collection = {"id": "1", "name": "faq", "isSystem": False, "type": 2}
        self.routes[("GET", f"{DB}/collection")] = (200, {"result": [collection]})
        self.routes[("GET", f"{DB}/view")] = (200, {"result": [{"name": "faq_view"}]})
        self.routes[("GET", f"{DB}/collection/faq/count")] = (200, {"count": count})

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and left is expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connections are reused
    server: FakeArango

    def do_GET(self) -> None:
        fake = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = urlsplit(self.path).path
        with fake.lock:
            fake.calls.append((self.command, path, body))
            fake.ports.add(self.client_address[1])
        not_found = {"error": True, "code": 404, "errorNum": 1203, "errorMessage": "not found"}
        answer = fake.routes.get((self.command, path), (404, not_found))
        status, payload = answer(body) if callable(answer) else answer
        if status == 0:  # never answer
            fake.hang.wait(TIMEOUT)
            return
        fake.hang.wait(fake.delay_s)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeArango]:
    """A fake ArangoDB on a free port of 127.0.0.1, answering nothing until told."""
    server = FakeArango()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def settings_for(fake: FakeArango, **changes: Any) -> KBSettings:
    return KBSettings(backend="arango", arango_url=fake.url, **changes)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- Opening -------------------------------------------------------------------------------


async def test_open_creates_the_missing_database_collection_and_view(fake: FakeArango) -> None:
    """A new server gets the database, the collection and a text_en view over three fields."""
    missing = {"error": True, "code": 404, "errorNum": 1228, "errorMessage": "no database"}
    fake.routes[("GET", f"{DB}/collection")] = (404, missing)
    fake.routes[("POST", "/_db/_system/_api/database")] = (201, {"result": True})
    fake.routes[("POST", f"{DB}/collection")] = (200, {"id": "1", "name": "faq"})
    fake.routes[("GET", f"{DB}/view")] = (200, {"result": []})
    fake.routes[("POST", f"{DB}/view")] = (201, {"name": "faq_view"})
    fake.routes[("GET", f"{DB}/collection/faq/count")] = (200, {"count": 0})
    with trio.fail_after(TIMEOUT):
        async with open_knowledge_base(settings_for(fake), seed=False) as kb:
            assert kb.statistics().entries == 0
    assert [(method, path) for method, path, _ in fake.calls] == [
        ("GET", f"{DB}/collection"),
        ("POST", "/_db/_system/_api/database"),
        ("POST", f"{DB}/collection"),
        ("GET", f"{DB}/view"),
        ("POST", f"{DB}/view"),
        ("GET", f"{DB}/collection/faq/count"),
    ]
    assert fake.calls[1][2]["name"] == "chatd"
    assert fake.calls[2][2]["name"] == "faq"
    view = fake.calls[4][2]
    assert (view["name"], view["type"]) == ("faq_view", "arangosearch")
    assert view["links"] == {
        "faq": {
            "analyzers": ["text_en"],
            "includeAllFields": False,
            "fields": {"question": {}, "answer": {}, "tags": {}},
        }
    }


async def test_open_of_an_existing_store_only_reads(fake: FakeArango) -> None:
    """When everything exists, opening writes nothing (a read-only user may open it)."""
    fake.serve_existing_store(count=76)
    with trio.fail_after(TIMEOUT):
        async with open_knowledge_base(settings_for(fake)) as kb:
            assert kb.statistics().entries == 76
    assert {method for method, _, _ in fake.calls} == {"GET"}


async def test_version_is_the_collections_revision(fake: FakeArango) -> None:
    """ArangoDB changes a collection's revision on every write, from anywhere."""
    fake.serve_existing_store(count=76)
    fake.routes[("GET", f"{DB}/collection/faq/revision")] = (
        200,
        {"revision": "_hW3kzHm---", "name": "faq"},
    )
    with trio.fail_after(TIMEOUT):
        async with open_knowledge_base(settings_for(fake)) as kb:
            assert await kb.version() == "_hW3kzHm---"


async def test_refused_connection_is_a_config_error_naming_arango_url() -> None:
    """At start-up an ArangoDB that refuses connections is one line naming kb.arango_url."""
    url = f"http://127.0.0.1:{closed_port()}"
    settings = KBSettings(backend="arango", arango_url=url, timeout_s=2.0)
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError) as info:
        async with open_knowledge_base(settings):
            pass
    message = str(info.value)
    assert message.startswith(f"kb.arango_url = '{url}': cannot open (cannot reach ArangoDB: ")
    assert "refused" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, UpstreamUnavailable)


async def test_missing_url_is_a_config_error_naming_arango_url() -> None:
    """kb.backend = 'arango' without kb.arango_url is refused before any I/O."""
    with pytest.raises(ConfigError, match=r"^kb\.arango_url = None: expected an http"):
        async with open_knowledge_base(KBSettings(backend="arango")):
            pass


async def test_bad_credentials_are_a_config_error(fake: FakeArango) -> None:
    """A server that refuses the user is a ConfigError carrying ArangoDB's reason."""
    denied = {"error": True, "code": 401, "errorNum": 11, "errorMessage": "not authorized"}
    fake.routes[("GET", f"{DB}/collection")] = (401, denied)
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match="not authorized"):
        async with open_knowledge_base(settings_for(fake)):
            pass


# --- Calls ---------------------------------------------------------------------------------


async def test_http_pool_is_sized_to_the_thread_limiter(fake: FakeArango) -> None:
    """Rounds of 12 calls at once on 12 threads reuse 12 connections (with
    requests' default pool of 10, two are dropped after every round and opened
    again in the next)."""
    fake.serve_existing_store(count=3)
    fake.delay_s = 0.02
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake, threads=12)) as kb:
            for _ in range(5):
                async with trio.open_nursery() as nursery:
                    for _ in range(12):
                        nursery.start_soon(kb.count)
            stats = kb.statistics()
    assert len(fake.ports) == stats.connections
    assert 2 <= stats.connections <= 12
    assert (stats.threads_total, stats.threads_busy, stats.errors) == (12, 0, 0)
    assert 2 <= stats.threads_peak <= 12


async def test_a_server_that_never_answers_times_out(fake: FakeArango) -> None:
    """A call gives up after kb.timeout_s: UpstreamUnavailable, and the thread is free again."""
    fake.serve_existing_store()
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake, timeout_s=0.3)) as kb:
            fake.routes[("GET", f"{DB}/collection/faq/count")] = (0, None)
            start = trio.current_time()
            with pytest.raises(UpstreamUnavailable, match="timed out"):
                await kb.count()
            assert trio.current_time() - start < 5
            stats = kb.statistics()
    assert (stats.errors, stats.threads_busy) == (1, 0)


@pytest.mark.parametrize(
    ("status", "errno", "expected"),
    [
        (500, 4, UpstreamError),
        (400, 1501, UpstreamError),
        (429, 429, UpstreamUnavailable),
        (409, 1200, UpstreamUnavailable),  # write-write conflict: try again later
        (503, 503, UpstreamUnavailable),
    ],
)
async def test_server_errors_become_chatd_errors(
    fake: FakeArango, status: int, errno: int, expected: type[Exception]
) -> None:
    """No python-arango exception escapes; "not now" answers are UpstreamUnavailable."""
    fake.serve_existing_store()
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake)) as kb:
            error = {"error": True, "code": status, "errorNum": errno, "errorMessage": "boom"}
            fake.routes[("GET", f"{DB}/collection/faq/count")] = (status, error)
            with pytest.raises(expected) as info:
                await kb.count()
    assert type(info.value) is expected
    assert info.value.__cause__ is not None


async def test_search_sends_user_text_only_as_bind_variables(fake: FakeArango) -> None:
    """The query text names parameters; the words travel as bind variables."""
    fake.serve_existing_store()
    result = {
        "candidates": [
            {
                "question": "Do you ship to Mars?",
                "answer": "Not yet.",
                "tags": ["space"],
                "score": 3.5,
            }
        ],
        "documents": 1,
        "terms": [{"df": 1}, {"df": 1}],
    }
    fake.routes[("POST", f"{DB}/cursor")] = (201, {"result": [result], "hasMore": False})
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake)) as kb:
            passages = await kb.search("do you ship to 'Mars'}) //?", limit=3)
            assert kb.statistics().searches == 1
    [(_, _, body)] = [call for call in fake.calls if call[1] == f"{DB}/cursor"]
    assert body["bindVars"] == {
        "t0": "shipping",  # "ship" in the FAQ's words (kb_rank.LEXICON)
        "t1": "mars",
        "limit": CANDIDATES,
        "@view": "faq_view",
        "@collection": "faq",
    }
    assert "ship" not in body["query"] and "mars" not in body["query"]
    assert body["options"]["maxRuntime"] == 5.0
    [passage] = passages
    assert (passage.question, passage.tags, passage.score) == (
        "Do you ship to Mars?",
        ("space",),
        3.5,
    )
    assert passage.confidence > 0.99


async def test_add_upserts_by_question_then_waits_for_the_view(fake: FakeArango) -> None:
    """One UPSERT query (last of equal questions wins), then a waitForSync search."""

    def cursor(body: Any) -> tuple[int, Any]:
        flags = [True, False] if "UPSERT" in body["query"] else [1]
        return 201, {"result": flags, "hasMore": False}

    fake.serve_existing_store(count=2)
    fake.routes[("POST", f"{DB}/cursor")] = cursor
    entries = [
        FAQEntry("Do you ship?", "Yes."),
        FAQEntry("Any returns?", "Within 30 days.", ("returns",)),
        FAQEntry("DO YOU SHIP?", "Yes, everywhere."),
    ]
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake)) as kb:
            assert await kb.add(entries) == 1
            stats = kb.statistics()
    assert (stats.added, stats.entries) == (1, 2)
    upsert, sync = [body for _, path, body in fake.calls if path == f"{DB}/cursor"]
    assert [doc["answer"] for doc in upsert["bindVars"]["entries"]] == [
        "Yes, everywhere.",
        "Within 30 days.",
    ]
    assert upsert["bindVars"]["@collection"] == "faq"
    assert "waitForSync: true" in sync["query"]
    assert sync["bindVars"] == {"@view": "faq_view"}


async def test_closed_knowledge_base_refuses_calls(fake: FakeArango) -> None:
    """After the context exits, calls raise ClosedResourceError ("we closed it")."""
    fake.serve_existing_store()
    with trio.fail_after(TIMEOUT):
        async with open_arango_knowledge_base(settings_for(fake)) as kb:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await kb.count()


# --- Query building and scoring ------------------------------------------------------------


def test_query_text_depends_only_on_term_count_and_length_class() -> None:
    """Quotes, braces and AQL words in terms never change the query text."""
    plain, plain_bind = search_query(["drop", "x"], 3)
    hostile, hostile_bind = search_query(["'}) RETURN 1 //", '"'], 3)
    assert plain == hostile
    assert (plain_bind["t0"], hostile_bind["t0"]) == ("drop", "'}) RETURN 1 //")


def test_long_terms_match_stem_prefixes_short_ones_whole_stems() -> None:
    """Terms of four characters or more match as prefixes, as in the SQLite backend."""
    query, bind = search_query(["shipping", "tax"], 1)
    assert "STARTS_WITH(d.question, TOKENS(@t0, 'text_en'))" in query
    assert "d.question IN TOKENS(@t1, 'text_en')" in query
    assert re.findall(r"@@?\w+", query).count("@@view") == 3  # ranking and two term counts
    assert bind["limit"] == CANDIDATES  # candidates for kb_rank to order, even for limit 1


def test_entry_key_ignores_case_only() -> None:
    """Equal questions ignoring case share a document key, a valid ArangoDB one."""
    assert entry_key("Do you ship?") == entry_key("DO YOU SHIP?")
    assert entry_key("Do you ship?") != entry_key("Do you ship")
    assert re.fullmatch(r"[0-9a-f]{32}", entry_key("Ünïcode ß?"))
    assert [d["answer"] for d in documents([FAQEntry("Q?", "1"), FAQEntry("q?", "2")])] == ["2"]


def test_passages_are_ranked_by_the_shared_ranking() -> None:
    """The query's candidates and term counts go to kb_rank.rank, as SQLite's do."""
    result = {
        "candidates": [
            {"question": "Something else", "answer": "A refund, maybe.", "tags": [], "score": 6.0},
            {"question": "Refund policy", "answer": "Money.", "tags": ["paypal"], "score": 5.0},
        ],
        "documents": 4,
        "terms": [{"df": 1}, {"df": 1}],
    }
    candidates = [
        Candidate("Something else", "A refund, maybe.", (), 6.0),
        Candidate("Refund policy", "Money.", ("paypal",), 5.0),
    ]
    found = passages(result, ["refund", "paypal"], limit=5)
    assert found == rank(["refund", "paypal"], candidates, [1, 1], 4, 5)
    assert [p.question for p in found] == ["Refund policy", "Something else"]
    assert passages(result, ["refund", "paypal"], limit=1) == found[:1]
    assert passages({**result, "candidates": []}, ["refund"], limit=3) == []
