"""The knowledge base behind ``frequently_asked``, by backend.

:class:`KnowledgeBase` (:mod:`.base`) is the interface;
:class:`~chatd.stores.kb.sqlite.SQLiteKnowledgeBase` the embedded
implementation and :class:`~chatd.stores.kb.arango.ArangoKnowledgeBase` the
production one; both rank their candidates with :mod:`.rank`.
:func:`open_knowledge_base` picks the backend from
:class:`~chatd.config.KBSettings` and seeds an empty one with the sample FAQ.
The backends import :mod:`.base` and :mod:`.rank`, never this package's
chooser, so nothing here imports in a circle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import structlog
import trio

from chatd.config import KBSettings
from chatd.exceptions import ConfigError, UpstreamError, UpstreamUnavailable
from chatd.stores.kb.base import (
    FAQEntry,
    KBStatistics,
    KnowledgeBase,
    load_faq_file,
    sample_faq,
)
from chatd.stores.kb.rank import Passage
from chatd.stores.kb.sqlite import SQLiteKnowledgeBase, open_sqlite_knowledge_base

__all__ = [
    "FAQEntry",
    "KBStatistics",
    "KnowledgeBase",
    "Passage",
    "SQLiteKnowledgeBase",
    "load_faq_file",
    "open_knowledge_base",
    "sample_faq",
]

log = structlog.get_logger("chatd.stores.kb")


@asynccontextmanager
async def open_knowledge_base(
    settings: KBSettings, *, seed: bool = True
) -> AsyncIterator[KnowledgeBase]:
    """Open the configured knowledge base, closing it on exit.

    With ``seed``, an empty knowledge base is loaded with the sample FAQ, so
    a first start answers real questions. A store that cannot be opened is a
    :class:`ConfigError` naming ``kb.path`` (SQLite) or ``kb.arango_url``
    (ArangoDB). The ArangoDB backend is imported only when chosen (it needs
    python-arango).
    """
    opened: AbstractAsyncContextManager[KnowledgeBase]
    if settings.backend == "arango":
        if settings.arango_url is None:
            raise ConfigError(
                "kb.arango_url = None: expected an http(s):// URL for kb.backend 'arango'"
            )
        from chatd.stores.kb.arango import open_arango_knowledge_base

        opened = open_arango_knowledge_base(settings)
        key, where = "kb.arango_url", settings.arango_url
        store = {"url": where, "database": settings.arango_database}
    else:
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
