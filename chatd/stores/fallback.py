"""Redis down degrades, it does not fail requests: local memory takes over.

Each wrapper tries its Redis store first. When that raises
:class:`UpstreamUnavailable` or :class:`UpstreamError` (a :class:`BreakerOpen`
among them: while the ``redis`` breaker is open calls fail fast, and after its
open timeout the next call is its probe), the call goes to the process's own
memory store instead, and ``on_fallback(store)`` counts it (the metric
``chatd_redis_fallbacks_total``). A warning is logged when a store switches to
memory and a line when Redis answers again, not one per call.

What was written to memory in the meantime stays there: sessions continue from
Redis's copy once it is back, and while it is down each instance enforces its
own rate limits (several instances admit that many times the limit).

The rate-limit wrapper is matched by shape (:class:`_Checks`), as stores may
not import ``chatd.pipeline``, where the ``RateLimiter`` protocol lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

import attrs
import structlog

from chatd.exceptions import ChatdError, UpstreamError, UpstreamUnavailable
from chatd.llm.types import Message
from chatd.stores.cache import AnswerCache, CacheStatistics, MemoryAnswerCache
from chatd.stores.sessions import MemorySessionStore, SessionStore

__all__ = ["FallbackAnswerCache", "FallbackRateLimiter", "FallbackSessionStore"]

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@attrs.define
class _Switch:
    """Which of the two a store is on, and the one place that decides it."""

    store: str
    on_fallback: Callable[[str], None]
    _local: bool = attrs.field(default=False, init=False)

    async def call(self, redis: Callable[[], Awaitable[R]], local: Callable[[], Awaitable[R]]) -> R:
        """``redis()``, or ``local()`` if Redis fails."""
        try:
            result = await redis()
        except (UpstreamUnavailable, UpstreamError) as exc:
            if not self._local:
                self._local = True
                log.warning(
                    f"redis unavailable, using local memory for {self.store}",
                    store=self.store,
                    error=str(exc),
                )
            self.on_fallback(self.store)
            return await local()
        except ChatdError:  # Redis answered, with a refusal (RateLimited): it is back
            self._back()
            raise
        self._back()
        return result

    def _back(self) -> None:
        if self._local:
            self._local = False
            log.info("redis back", store=self.store)


S = TypeVar("S")
L = TypeVar("L")


@attrs.define
class _Fallback(Generic[S, L]):
    """A wrapper's two stores and its :class:`_Switch`, named by its ``store``."""

    store: ClassVar[str]
    redis: S
    local: L
    on_fallback: Callable[[str], None]
    _switch: _Switch = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: _Switch(self.store, self.on_fallback), takes_self=True),
    )


@attrs.define
class FallbackAnswerCache(_Fallback[AnswerCache[T], MemoryAnswerCache[T]], Generic[T]):
    """An :class:`AnswerCache` in Redis, in local memory while Redis fails."""

    store: ClassVar[str] = "cache"

    async def get(self, key: str) -> T | None:
        """See :meth:`AnswerCache.get`."""
        return await self._switch.call(lambda: self.redis.get(key), lambda: self.local.get(key))

    async def put(self, key: str, value: T) -> None:
        """See :meth:`AnswerCache.put`."""
        await self._switch.call(
            lambda: self.redis.put(key, value), lambda: self.local.put(key, value)
        )

    def expire(self) -> int:
        """Drop expired local entries (the janitor calls this); Redis expires its own."""
        return self.local.expire()

    def statistics(self) -> CacheStatistics:
        """Both stores' counts added up."""
        r, m = self.redis.statistics(), self.local.statistics()
        return CacheStatistics(
            r.entries + m.entries, r.hits + m.hits, r.misses + m.misses, r.expired + m.expired
        )


@attrs.define
class FallbackSessionStore(_Fallback[SessionStore, MemorySessionStore]):
    """A :class:`SessionStore` in Redis, in local memory while Redis fails."""

    store: ClassVar[str] = "sessions"

    async def history(self, session: str) -> list[Message]:
        """See :meth:`SessionStore.history`."""
        return await self._switch.call(
            lambda: self.redis.history(session), lambda: self.local.history(session)
        )

    async def append(self, session: str, messages: Sequence[Message]) -> None:
        """See :meth:`SessionStore.append`."""
        await self._switch.call(
            lambda: self.redis.append(session, messages),
            lambda: self.local.append(session, messages),
        )

    def expire(self) -> int:
        """Drop local sessions past their time (the janitor calls this)."""
        return self.local.expire()


class _Checks(Protocol):
    """``chatd.pipeline.RateLimiter``'s shape."""

    @property
    def tokens_per_day(self) -> int:
        """Tokens a client may use per UTC day; 0: no budget."""
        ...

    async def check(self, client: str) -> None: ...

    async def charge(self, client: str, tokens: int) -> None: ...


@attrs.define
class FallbackRateLimiter(_Fallback[_Checks, _Checks]):
    """Rate limits in Redis, in local memory while Redis fails."""

    store: ClassVar[str] = "rate_limits"

    @property
    def tokens_per_day(self) -> int:
        return self.redis.tokens_per_day

    async def check(self, client: str) -> None:
        """Take one chat from ``client``'s bucket, or raise ``RateLimited``."""
        await self._switch.call(lambda: self.redis.check(client), lambda: self.local.check(client))

    async def charge(self, client: str, tokens: int) -> None:
        """Count ``tokens`` against ``client``'s budget for today."""
        await self._switch.call(
            lambda: self.redis.charge(client, tokens), lambda: self.local.charge(client, tokens)
        )
