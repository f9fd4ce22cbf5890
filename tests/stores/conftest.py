"""The knowledge-base implementations the contract suite runs against.

Every backend in :data:`KB_BACKENDS` runs the whole of ``test_kb.py``. The
ArangoDB one needs a server: set ``CHATD_TEST_ARANGO_URL`` (and
``CHATD_TEST_ARANGO_USERNAME``, ``CHATD_TEST_ARANGO_PASSWORD``, root and no
password by default), a user that may create databases. Each test gets a
database of its own, dropped afterwards. Without the URL those tests skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chatd.config import KBSettings
from chatd.stores.kb import KnowledgeBase, open_knowledge_base

KB_BACKENDS = ["sqlite", "arango"]

ARANGO_SKIP = (
    "ArangoDB cannot run on this machine: set CHATD_TEST_ARANGO_URL to run the "
    "knowledge-base contract suite against one"
)


def arango_test_settings() -> KBSettings:
    """Settings for a new, uniquely named database on the test server; skips without one."""
    url = os.environ.get("CHATD_TEST_ARANGO_URL")
    if not url:
        pytest.skip(ARANGO_SKIP)
    return KBSettings(
        backend="arango",
        arango_url=url,
        arango_database=f"chatd_test_{uuid.uuid4().hex[:12]}",
        arango_username=os.environ.get("CHATD_TEST_ARANGO_USERNAME", "root"),
        arango_password=os.environ.get("CHATD_TEST_ARANGO_PASSWORD", ""),
    )


def drop_arango_database(settings: KBSettings) -> None:
    """Drop the test database (and with it the collection and view)."""
    from arango.client import ArangoClient

    client = ArangoClient(hosts=settings.arango_url or "", request_timeout=settings.timeout_s)
    try:
        system = client.db("_system", settings.arango_username, settings.arango_password or "")
        system.delete_database(settings.arango_database, ignore_missing=True)
    finally:
        client.close()


@pytest.fixture(params=KB_BACKENDS)
def kb_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KBSettings]:
    """Settings for a fresh, empty store of each backend."""
    backend = request.param
    if backend == "sqlite":
        yield KBSettings(backend="sqlite", path=str(tmp_path / "kb.sqlite3"))
    elif backend == "arango":
        settings = arango_test_settings()
        try:
            yield settings
        finally:
            drop_arango_database(settings)
    else:
        raise AssertionError(f"no test set-up for kb backend {backend!r}")


@pytest.fixture
async def kb(kb_settings: KBSettings) -> AsyncIterator[KnowledgeBase]:
    """An open knowledge base, seeded with the sample FAQ as on a first start."""
    async with open_knowledge_base(kb_settings) as store:
        yield store


@pytest.fixture
async def empty_kb(kb_settings: KBSettings) -> AsyncIterator[KnowledgeBase]:
    """An open knowledge base with nothing in it."""
    async with open_knowledge_base(kb_settings, seed=False) as store:
        yield store
