"""Fixtures: a simulated LLM on a free loopback port, and a raw httpx client for it;
and the helpers the rules tests share (test_rules*.py): a request for a message,
the calls or text it plans, a round of tool results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from chatd.config import SimSettings
from chatd.llm.sim import SimServer, serve_sim_llm
from chatd.llm.sim.rules import Rules, TextPlan, ToolCall, ToolCallsPlan, default_rules, plan_reply

from .openai_wire import TOOLS


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


def body(text: str, tools: list[dict[str, Any]] | None = TOOLS, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"messages": [{"role": "user", "content": text}], **extra}
    if tools is not None:
        request["tools"] = tools
    return request


def calls(text: str, rules: Rules | None = None, **extra: Any) -> list[ToolCall]:
    plan = plan_reply(body(text, **extra), rules or default_rules())
    assert isinstance(plan, ToolCallsPlan), plan
    return list(plan.calls)


def text_of(plan: object) -> str:
    assert isinstance(plan, TextPlan), plan
    return plan.text


def tool_results(*results: tuple[str, str]) -> list[dict[str, Any]]:
    """A round of tool calls as messages: the assistant calling each tool, then its result."""
    calls = [
        {"id": f"c{n}", "type": "function", "function": {"name": name}}
        for n, (name, _) in enumerate(results, start=1)
    ]
    return [
        {"role": "assistant", "content": None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": f"c{n}", "content": content}
            for n, (_, content) in enumerate(results, start=1)
        ),
    ]
