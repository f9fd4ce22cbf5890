"""Wiring: the pipeline and everything it uses, opened and closed together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import httpx

from chatd.config import Settings
from chatd.llm import open_llm_client
from chatd.pipeline import Admission, MemoryRateLimiter, Pipeline
from chatd.pipeline.registry import RequestRegistry
from chatd.pipeline.upstream import Endpoint, GuardedKnowledgeBase, Upstream, is_llm_failure
from chatd.resilience.breaker import CircuitBreaker
from chatd.stores.cache import MemoryAnswerCache
from chatd.stores.kb import KnowledgeBase, open_knowledge_base
from chatd.stores.sessions import MemorySessionStore
from chatd.tools.base import Tool
from chatd.tools.calculator import Calculator
from chatd.tools.clock import Clock
from chatd.tools.faq import FrequentlyAsked
from chatd.tools.http import http_tools
from chatd.tools.registry import ToolRegistry

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
async def open_upstream(settings: Settings, llm_url: str) -> AsyncIterator[Upstream]:
    """The LLM endpoints, primary then fallbacks, each with its own breaker."""
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
        yield Upstream(endpoints, retries=llm.retries, backoff_s=llm.retry_backoff_s)


@asynccontextmanager
async def open_pipeline(
    settings: Settings, llm_url: str, extra_tools: Sequence[Tool] = ()
) -> AsyncIterator[Pipeline]:
    """A :class:`Pipeline` over the configured LLM, knowledge base and tools
    (plus ``extra_tools``, for tests and embedders)."""
    async with (
        open_upstream(settings, llm_url) as upstream,
        open_knowledge_base(settings.kb) as raw_kb,
        httpx.AsyncClient() as tool_http,
    ):
        kb = GuardedKnowledgeBase(raw_kb, CircuitBreaker("kb", settings.breakers.kb))
        registry = ToolRegistry(
            [*builtin_tools(settings, kb, tool_http), *extra_tools],
            default_timeout_s=settings.tools.timeout_s,
        )
        breakers = {e.breaker.name: e.breaker for e in upstream.endpoints}
        breakers["kb"] = kb.breaker
        yield Pipeline(
            settings=settings,
            llm=upstream,
            tools=registry,
            sessions=MemorySessionStore(),
            admission=Admission(settings.limits),
            rate_limiter=MemoryRateLimiter(settings.limits.rate_per_minute),
            requests=RequestRegistry(settings.janitor),
            breakers=breakers,
            cache=(
                MemoryAnswerCache(settings.cache.ttl_s, settings.cache.max_entries)
                if settings.cache.enabled
                else None
            ),
        )
