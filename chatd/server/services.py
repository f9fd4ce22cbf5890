"""Wiring: the pipeline and everything it uses, opened and closed together."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from chatd.config import Settings
from chatd.exceptions import UpstreamError
from chatd.llm import open_llm_client
from chatd.observability.metrics import Metrics
from chatd.pipeline import Admission, MemoryRateLimiter, Pipeline, RateLimiter, RedisRateLimiter
from chatd.pipeline.codec import CodecError, decode_cached, encode_cached
from chatd.pipeline.flights import Flights
from chatd.pipeline.registry import RequestRegistry
from chatd.pipeline.request import CachedAnswer
from chatd.pipeline.upstream import Endpoint, GuardedKnowledgeBase, Upstream, is_llm_failure
from chatd.resilience.breaker import CircuitBreaker
from chatd.resilience.supervisor import Supervisor
from chatd.stores.cache import AnswerCache, MemoryAnswerCache
from chatd.stores.fallback import FallbackAnswerCache, FallbackRateLimiter, FallbackSessionStore
from chatd.stores.kb import KnowledgeBase, open_knowledge_base
from chatd.stores.sessions import MemorySessionStore, SessionStore
from chatd.tools.base import Tool
from chatd.tools.calculator import Calculator
from chatd.tools.clock import Clock
from chatd.tools.faq import FrequentlyAsked
from chatd.tools.http import http_tools
from chatd.tools.registry import ToolRegistry

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured
    from chatd.stores.redis.client import RedisClient

__all__ = ["builtin_tools", "open_pipeline", "open_upstream"]


def builtin_tools(settings: Settings, kb: KnowledgeBase, http: httpx.AsyncClient) -> list[Tool]:
    """The tools every chatd offers, then the HTTP tools from config."""
    return [
        FrequentlyAsked(kb, settings.tools.faq_min_confidence),
        Calculator(),
        Clock(),
        *http_tools(settings.tools, http),
    ]


@asynccontextmanager
async def open_upstream(
    settings: Settings, llm_url: str, metrics: Metrics | None = None
) -> AsyncIterator[Upstream]:
    """The LLM endpoints, primary then fallbacks, each with its own breaker,
    their calls counted in ``metrics``."""
    llm = settings.llm
    targets = [(llm_url, llm)] + [
        (
            f.url,
            attrs.evolve(
                llm, url=f.url, model=f.model or llm.model, api_key=f.api_key or llm.api_key
            ),
        )
        for f in llm.fallbacks
    ]
    async with contextlib.AsyncExitStack() as stack:
        endpoints = []
        for index, (url, endpoint_settings) in enumerate(targets):
            client = await stack.enter_async_context(
                open_llm_client(endpoint_settings, base_url=url)
            )
            name = "llm" if index == 0 else f"llm-fallback-{index}"
            breaker = CircuitBreaker(name, settings.breakers.llm, is_failure=is_llm_failure)
            endpoints.append(Endpoint(client, breaker))
        yield Upstream(
            endpoints, retries=llm.retries, backoff_s=llm.retry_backoff_s, metrics=metrics
        )


@asynccontextmanager
async def open_pipeline(
    settings: Settings,
    llm_url: str,
    extra_tools: Sequence[Tool] = (),
    metrics: Metrics | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[Pipeline]:
    """The one way to get a :class:`Pipeline`: over the configured LLM,
    knowledge base and tools (plus ``extra_tools``, for tests and embedders),
    counting into ``metrics`` (a new one if not given).

    Its long-lived tasks (queue positions, the knowledge base's version, the
    flights and their Redis reader) run in a nursery of its own under
    ``supervisor``; leaving the block cancels them, then closes the stores and
    clients in the reverse of the order they were opened.
    """
    metrics = metrics or Metrics()
    supervisor = supervisor or Supervisor()
    async with (
        open_upstream(settings, llm_url, metrics) as upstream,
        open_knowledge_base(settings.kb) as raw_kb,
        httpx.AsyncClient() as tool_http,
        contextlib.AsyncExitStack() as stack,
    ):
        redis = None
        if settings.redis.url:
            from chatd.stores.redis.client import open_redis

            redis = await stack.enter_async_context(
                open_redis(settings.redis, settings.breakers.redis)
            )
        kb = GuardedKnowledgeBase(raw_kb, CircuitBreaker("kb", settings.breakers.kb))
        registry = ToolRegistry(
            [*builtin_tools(settings, kb, tool_http), *extra_tools],
            default_timeout_s=settings.tools.timeout_s,
        )
        breakers = {e.breaker.name: e.breaker for e in upstream.endpoints}
        breakers["kb"] = kb.breaker
        if redis is not None:
            breakers["redis"] = redis.breaker
        sessions, rate_limiter, cache = _stores(settings, redis, metrics.redis_fallback)
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                pipeline = Pipeline(
                    settings=settings,
                    llm=upstream,
                    tools=registry,
                    sessions=sessions,
                    admission=Admission(settings.limits),
                    rate_limiter=rate_limiter,
                    requests=RequestRegistry(settings.janitor),
                    breakers=breakers,
                    metrics=metrics,
                    flights=_flights(settings, redis, nursery, supervisor),
                    cache=cache,
                    redis=redis,
                    kb=kb,
                )
                await pipeline.kb_version.read()
                positions = pipeline.admission.run_position_updates
                nursery.start_soon(supervisor.run, "queue_positions", positions)
                watch = functools.partial(pipeline.kb_version.watch, settings.janitor.interval_s)
                nursery.start_soon(supervisor.run, "kb_watch", watch)
                try:
                    yield pipeline
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # What the caller's block raised comes back as it was, not inside
            # the group the pipeline's nursery wraps it in.
            if raised is not None and group.exceptions == (raised,):
                raise raised from raised.__cause__
            raise


def _flights(
    settings: Settings, redis: RedisClient | None, nursery: trio.Nursery, supervisor: Supervisor
) -> Flights | None:
    """Shared flights, in the pipeline's own nursery (never a caller's): in
    memory, or with every instance on the same Redis."""
    if not settings.flights.enabled:
        return None
    deadline_s = settings.limits.request_timeout_s
    if redis is None:
        return Flights(nursery, deadline_s)
    from chatd.pipeline.flights_redis import RedisFlights

    return RedisFlights(
        nursery,
        deadline_s,
        redis=redis,
        lease_s=settings.redis.flight_lease_s,
        supervisor=supervisor,
    )


def _stores(
    settings: Settings, redis: RedisClient | None, on_fallback: Callable[[str], None]
) -> tuple[SessionStore, RateLimiter, AnswerCache[CachedAnswer] | None]:
    """Sessions, rate limits and the cache: in memory, or in Redis with memory
    standing in while Redis fails."""
    sessions = MemorySessionStore()
    limits = settings.limits
    rate_limiter = MemoryRateLimiter(limits.rate_per_minute, limits.tokens_per_day)
    cache = (
        MemoryAnswerCache[CachedAnswer](
            settings.cache.ttl_s,
            settings.cache.max_entries,
            settings.cache.max_bytes,
            CachedAnswer.nbytes,
        )
        if settings.cache.enabled
        else None
    )
    if redis is None:
        return sessions, rate_limiter, cache
    from chatd.stores.redis.stores import RedisAnswerCache, RedisSessionStore

    shared_cache = None
    if cache is not None:
        shared_cache = FallbackAnswerCache(
            RedisAnswerCache(redis, settings.cache.ttl_s, encode_cached, _decode_cached),
            cache,
            on_fallback,
        )
    return (
        FallbackSessionStore(
            RedisSessionStore(redis, sessions.max_messages, sessions.ttl_s), sessions, on_fallback
        ),
        FallbackRateLimiter(
            RedisRateLimiter(redis, limits.rate_per_minute, limits.tokens_per_day),
            rate_limiter,
            on_fallback,
        ),
        shared_cache,
    )


def _decode_cached(data: bytes) -> CachedAnswer:
    """A cached answer from Redis; one that cannot be read (another version of
    chatd wrote it) fails like Redis would, and the local cache answers."""
    try:
        return decode_cached(data)
    except CodecError as exc:
        raise UpstreamError(f"unreadable cache entry in redis: {exc}") from exc
