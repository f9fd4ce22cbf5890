"""The LLM and the knowledge base as the pipeline calls them: behind breakers.

:class:`Upstream` offers the same ``stream(request)`` as an
:class:`~chatd.llm.LLMClient`, over an ordered list of endpoints, each with
its own circuit breaker:

- an endpoint whose breaker is open is skipped for the next one (fallbacks);
  with every one open the call fails at once with ``BreakerOpen``
  (``upstream_unavailable`` and ``retry_after_ms``);
- a call that fails before its first event (nothing has reached a client
  yet) is retried, up to ``llm.retries`` times, after a jittered exponential
  backoff, and never on an endpoint whose breaker has opened;
- once the first event is in, errors propagate: a client has seen tokens.

:class:`GuardedKnowledgeBase` puts the knowledge base behind its breaker.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import structlog
import trio

from chatd.exceptions import (
    BreakerOpen,
    ChatdError,
    DeadlineExceeded,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatd.llm import ChatEvent, ChatRequest, LLMClient
from chatd.observability.metrics import Metrics
from chatd.resilience.breaker import Attempt, CircuitBreaker
from chatd.stores.kb import FAQEntry, KBStatistics, KnowledgeBase, Passage

__all__ = ["Endpoint", "GuardedKnowledgeBase", "Upstream", "is_llm_failure"]

log = structlog.get_logger("chatd.upstream")


def is_llm_failure(exc: BaseException) -> bool:
    """What counts against an LLM endpoint: it was unreachable, refused, failed
    or slow in one of its phases. A request's own deadline does not count, nor
    a 4xx answer to a request it could not take (our request's fault)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_llm_failure(e) for e in exc.exceptions)
    if isinstance(exc, BreakerOpen):
        return False
    if isinstance(exc, UpstreamHTTPError):
        return exc.status >= 500 or exc.status in (408, 429)
    if isinstance(exc, DeadlineExceeded):
        return isinstance(exc, UpstreamTimeout)
    return isinstance(exc, UpstreamUnavailable | UpstreamError)


def _retryable(exc: BaseException) -> bool:
    return is_llm_failure(exc)


@attrs.frozen
class Endpoint:
    """One LLM endpoint and its breaker."""

    client: LLMClient
    breaker: CircuitBreaker


@attrs.define
class _Resumed:
    """A stream whose first event was read ahead (to decide on a retry)."""

    first: ChatEvent | None
    rest: AsyncIterator[ChatEvent]

    def __aiter__(self) -> _Resumed:
        return self

    async def __anext__(self) -> ChatEvent:
        if self.first is not None:
            event, self.first = self.first, None
            return event
        return await self.rest.__anext__()


@attrs.define
class Upstream:
    """The LLM endpoints, primary first, with breakers, retries and fallbacks."""

    endpoints: Sequence[Endpoint]
    retries: int
    backoff_s: float
    rng: random.Random = attrs.field(factory=random.Random)
    metrics: Metrics | None = None
    """Where each call is counted, by endpoint and outcome (none: not counted)."""

    @property
    def model(self) -> str:
        """The primary endpoint's model (part of a flight's key)."""
        return self.endpoints[0].client.model

    def _admit(self, stack: contextlib.ExitStack) -> tuple[Endpoint, Attempt]:
        """The first endpoint whose breaker lets a call through, holding its attempt."""
        waits: list[int] = []  # numbers, not the exceptions: those would hold this frame
        for endpoint in self.endpoints:
            try:
                return endpoint, stack.enter_context(endpoint.breaker.attempt())
            except BreakerOpen as exc:
                waits.append(exc.retry_after_ms or 0)
        wait = min(waits)
        raise BreakerOpen("the LLM's circuit breaker is open", retry_after_ms=wait)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[ChatEvent]]:
        """Stream a call, retried and failed over until its first event arrives."""
        tries = 0
        while True:
            with contextlib.ExitStack() as attempts:
                endpoint, attempt = self._admit(attempts)
                streaming = False
                started, first_at, outcome = trio.current_time(), None, "ok"
                try:
                    async with endpoint.client.stream(request) as events:
                        first = await events.__anext__()
                        first_at = trio.current_time()
                        # The first event is in: the endpoint works. Saying so now
                        # frees a half-open probe slot for the rest of the stream.
                        attempt.success()
                        streaming = True
                        yield _Resumed(first, events)
                        return
                except trio.Cancelled:
                    outcome = "cancelled"
                    raise
                except Exception as exc:
                    # (after the first event, a non-chatd error is the caller's, not the LLM's)
                    fallback = "ok" if streaming else "error"
                    outcome = exc.code if isinstance(exc, ChatdError) else fallback
                    # A deadline fires as the block ends, so failures before the
                    # first event are caught around the whole block.
                    if streaming or not _retryable(exc) or tries >= self.retries:
                        raise
                    attempt.failure()
                    error = str(exc)
                finally:
                    if self.metrics is not None:
                        now = trio.current_time()
                        first_s = None if first_at is None else first_at - started
                        name = endpoint.breaker.name
                        self.metrics.llm_call(name, outcome, first_s, now - started)
            tries += 1
            delay = self.backoff_s * (2 ** (tries - 1)) * self.rng.uniform(0.5, 1.5)
            log.info("retrying the LLM", attempt=tries, error=error, delay_s=round(delay, 3))
            await trio.sleep(delay)


@attrs.define
class GuardedKnowledgeBase:
    """A knowledge base whose searches go through its circuit breaker."""

    kb: KnowledgeBase
    breaker: CircuitBreaker

    async def search(self, query: str, limit: int = 3) -> list[Passage]:
        """See :meth:`KnowledgeBase.search`; fails fast while the breaker is open."""
        with self.breaker.attempt():
            return await self.kb.search(query, limit)

    async def add(self, entries: Sequence[FAQEntry]) -> int:
        """See :meth:`KnowledgeBase.add`."""
        with self.breaker.attempt():
            return await self.kb.add(entries)

    async def count(self) -> int:
        """See :meth:`KnowledgeBase.count`."""
        return await self.kb.count()

    async def version(self) -> str:
        """See :meth:`KnowledgeBase.version`."""
        with self.breaker.attempt():
            return await self.kb.version()

    def statistics(self) -> KBStatistics:
        """See :meth:`KnowledgeBase.statistics`."""
        return self.kb.statistics()
