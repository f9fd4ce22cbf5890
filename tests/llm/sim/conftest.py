"""Fixtures: a simulated LLM on a free loopback port, and a raw httpx client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from chatd.config import SimSettings
from chatd.llm.sim import SimServer, serve_sim_llm


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    """A fast simulator (5 ms to first token, 5000 tokens/s) for the test's lifetime."""
    server: SimServer = await nursery.start(
        serve_sim_llm, SimSettings(ttft_ms=5, tokens_per_s=5000)
    )
    return server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose base URL is the simulator's root (``/v1/...``, ``/_sim/...``)."""
    async with httpx.AsyncClient(base_url=f"http://{sim.host}:{sim.port}") as http:
        yield http
