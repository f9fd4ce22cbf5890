"""Real chatd and simulated LLM servers on loopback, for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from chatd.config import KBSettings, Settings, SimSettings
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
