"""Wiring: the pipeline and everything it uses, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx

from chatd.config import Settings
from chatd.llm import open_llm_client
from chatd.pipeline import Admission, Pipeline, RateLimiter
from chatd.pipeline.registry import RequestRegistry
from chatd.stores.cache import MemoryAnswerCache
from chatd.stores.kb import KnowledgeBase, open_knowledge_base
from chatd.stores.sessions import MemorySessionStore
from chatd.tools.base import Tool
from chatd.tools.calculator import Calculator
from chatd.tools.clock import Clock
from chatd.tools.faq import FrequentlyAsked
from chatd.tools.http import http_tools
from chatd.tools.registry import ToolRegistry

__all__ = ["builtin_tools", "open_pipeline"]


def builtin_tools(settings: Settings, kb: KnowledgeBase, http: httpx.AsyncClient) -> list[Tool]:
    """The tools every chatd offers, then the HTTP tools from config."""
    return [
        FrequentlyAsked(kb, settings.tools.faq_min_confidence),
        Calculator(),
        Clock(),
        *http_tools(settings.tools, http),
    ]


@asynccontextmanager
async def open_pipeline(
    settings: Settings, llm_url: str, extra_tools: Sequence[Tool] = ()
) -> AsyncIterator[Pipeline]:
    """A :class:`Pipeline` over the configured LLM, knowledge base and tools
    (plus ``extra_tools``, for tests and embedders)."""
    async with (
        open_llm_client(settings.llm, base_url=llm_url) as llm,
        open_knowledge_base(settings.kb) as kb,
        httpx.AsyncClient() as tool_http,
    ):
        registry = ToolRegistry(
            [*builtin_tools(settings, kb, tool_http), *extra_tools],
            default_timeout_s=settings.tools.timeout_s,
        )
        yield Pipeline(
            settings=settings,
            llm=llm,
            tools=registry,
            sessions=MemorySessionStore(),
            admission=Admission(settings.limits),
            rate_limiter=RateLimiter(settings.limits.rate_per_minute),
            requests=RequestRegistry(settings.janitor),
            cache=(
                MemoryAnswerCache(settings.cache.ttl_s, settings.cache.max_entries)
                if settings.cache.enabled
                else None
            ),
        )
