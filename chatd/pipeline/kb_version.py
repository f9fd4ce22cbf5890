"""The knowledge base's version, as the pipeline last read it.

It is part of every answer's key (:func:`~chatd.pipeline.flights.flight_key`),
so an answer made from old entries is neither shared nor replayed once they
change (``chatd kb load``, or an edit to ArangoDB from elsewhere).
"""

from __future__ import annotations

import attrs
import structlog
import trio

from chatd.exceptions import ChatdError
from chatd.stores.kb import KnowledgeBase

__all__ = ["KBVersion"]

log = structlog.get_logger("chatd.pipeline")


@attrs.define
class KBVersion:
    """The version of ``kb`` (``""`` before the first read, or without one)."""

    kb: KnowledgeBase | None
    value: str = ""

    async def read(self) -> None:
        """Read it again (kept as it was if it cannot be read: the knowledge
        base's breaker counts that)."""
        if self.kb is None:
            return
        try:
            version = await self.kb.version()
        except ChatdError:
            return
        if self.value and version != self.value:
            log.info("knowledge base changed: answers made before are not replayed")
        self.value = version

    async def watch(self, interval_s: float) -> None:
        """Read it every ``interval_s`` (long-lived: run it under the supervisor)."""
        while self.kb is not None:
            await trio.sleep(interval_s)
            await self.read()
