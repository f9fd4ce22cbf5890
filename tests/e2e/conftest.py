"""Real chatd and simulated LLM servers on loopback, for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from chatd.config import (
    BreakerSettings,
    BreakersSettings,
    KBSettings,
    LLMSettings,
    Settings,
    SimSettings,
)
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Fast test settings; keyword arguments replace whole tables."""

    def make(**tables: Any) -> Settings:
        base = Settings(
            sim=SimSettings(ttft_ms=10, tokens_per_s=1000),
            kb=KBSettings(path=str(tmp_path / "kb.sqlite3")),
        )
        return attrs.evolve(base, **tables)

    return make


@pytest.fixture
async def chatd(make_settings: MakeSettings) -> AsyncIterator[Chatd]:
    """chatd with default test settings."""
    async with open_chatd(make_settings()) as server:
        yield server


@pytest.fixture
async def client(chatd: Chatd) -> AsyncIterator[ChatClient]:
    """A WebSocket client connected to :func:`chatd`."""
    async with open_chat_client(chatd.ws_url) as ws:
        yield ws


async def ask(client: ChatClient, request_id: str, message: str, **fields: Any) -> dict[str, Any]:
    """Send a chat and wait (10 s at most) for its terminal event."""
    with trio.fail_after(10):
        await client.chat(request_id, message, **fields)
        return await client.finish(request_id)


async def start_chat(
    chatd: Chatd, client: ChatClient, request_id: str, message: str, **timing: float
) -> None:
    """Set the simulated LLM's ``timing``, send a chat and wait (10 s at most) until it
    is accepted."""
    assert chatd.sim is not None
    chatd.sim.set_timing(**timing)
    with trio.fail_after(10):
        await client.chat(request_id, message)
        await client.wait_for(request_id, "accepted")


CHAT_ANSWER_FIELDS = frozenset(
    {"answer", "path", "request_id", "finish_reason", "shared", "cached", "usage", "timings"}
)
"""The keys of a JSON (not SSE) answer to ``POST /v1/chat``."""


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """An SSE body as (event, data) pairs."""
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


@asynccontextmanager
async def open_chatd_with_llm_down(
    make_settings: Callable[..., Settings], failure_threshold: int
) -> AsyncIterator[tuple[Chatd, ChatClient]]:
    """chatd whose simulated LLM answers 503, with no retries and an LLM breaker that
    opens for 60 s after ``failure_threshold`` failures; and a client on it."""
    settings = make_settings(
        llm=LLMSettings(retries=0),
        breakers=BreakersSettings(
            llm=BreakerSettings(failure_threshold=failure_threshold, open_timeout_s=60)
        ),
    )
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        chatd.sim.set_fault("error", status=503)
        yield chatd, client
