"""The knowledge-base implementations the contract suite runs against.

Every backend in :data:`KB_BACKENDS` runs the whole of ``test_kb.py``. The
ArangoDB one will join by adding its name here and a branch below that skips
unless a test server is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatd.config import KBSettings
from chatd.stores import KnowledgeBase, open_knowledge_base

KB_BACKENDS = ["sqlite"]


@pytest.fixture(params=KB_BACKENDS)
def kb_settings(request: pytest.FixtureRequest, tmp_path: Path) -> KBSettings:
    """Settings for a fresh, empty store of each backend."""
    backend = request.param
    if backend == "sqlite":
        return KBSettings(backend="sqlite", path=str(tmp_path / "kb.sqlite3"))
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
