"""What only the SQLite knowledge base does: WAL, its pool, translating sqlite3 errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from chatd.config import KBSettings
from chatd.exceptions import ConfigError, UpstreamError, UpstreamUnavailable
from chatd.stores.kb import FAQEntry, SQLiteKnowledgeBase, open_knowledge_base
from chatd.stores.kb.sqlite import open_sqlite_knowledge_base

TIMEOUT = 20


async def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    """The file is switched to WAL so readers run while a writer writes."""
    path = tmp_path / "kb.sqlite3"
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_knowledge_base(str(path)):
            pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


async def test_connections_never_outnumber_threads(tmp_path: Path) -> None:
    """However many tasks search, at most ``threads`` connections are opened."""
    with trio.fail_after(TIMEOUT):
        async with open_knowledge_base(KBSettings(path=str(tmp_path / "kb.sqlite3"))) as default_kb:
            assert default_kb.statistics().threads_total == 4
        async with open_sqlite_knowledge_base(str(tmp_path / "kb.sqlite3"), threads=2) as kb:
            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(kb.search, "where is my order")
            stats = kb.statistics()
            assert 1 <= stats.connections <= 2
            assert stats.threads_peak <= 2
        assert kb.statistics().connections == 0


async def test_closed_knowledge_base_refuses_calls(tmp_path: Path) -> None:
    """After the context exits, calls raise ClosedResourceError ("we closed it")."""
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_knowledge_base(str(tmp_path / "kb.sqlite3")) as kb:
            await kb.add([FAQEntry("Q?", "A.")])
        with pytest.raises(trio.ClosedResourceError):
            await kb.count()


async def test_cancelled_search_leaves_the_store_usable(tmp_path: Path) -> None:
    """A search cancelled mid-way leaks nothing; the next one works."""
    with trio.fail_after(TIMEOUT):
        async with open_knowledge_base(KBSettings(path=str(tmp_path / "kb.sqlite3"))) as kb:
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(kb.search, "reset my password")
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert (await kb.search("reset my password"))[0].confidence > 0.5
            assert kb.statistics().threads_busy == 0


async def test_unopenable_path_is_upstream_unavailable(tmp_path: Path) -> None:
    """A path sqlite cannot open raises UpstreamUnavailable from the sqlite3 error."""
    with trio.fail_after(TIMEOUT), pytest.raises(UpstreamUnavailable) as info:
        async with open_sqlite_knowledge_base(str(tmp_path)):
            pass
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert info.value.retry_after_ms


async def test_corrupt_file_is_upstream_error(tmp_path: Path) -> None:
    """A file that is not a database raises UpstreamError, not a sqlite3 error."""
    path = tmp_path / "kb.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with trio.fail_after(TIMEOUT), pytest.raises(UpstreamError) as info:
        async with open_sqlite_knowledge_base(str(path)):
            pass
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_errors_are_counted(tmp_path: Path) -> None:
    """A failing DB call shows in statistics().errors."""
    kb = SQLiteKnowledgeBase(str(tmp_path))
    with trio.fail_after(TIMEOUT), pytest.raises(UpstreamUnavailable):
        await kb.count()
    assert kb.statistics().errors == 1
    await kb.aclose()


@pytest.mark.parametrize("make_bad", ["directory", "corrupt"])
async def test_open_knowledge_base_names_kb_path(tmp_path: Path, make_bad: str) -> None:
    """At start-up a store that cannot be opened is a ConfigError naming kb.path."""
    path = tmp_path / "kb.sqlite3"
    if make_bad == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"garbage" * 1000)
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match=r"^kb\.path = '.*': cannot"):
        async with open_knowledge_base(KBSettings(path=str(path))):
            pass
