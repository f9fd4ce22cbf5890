"""How the built-in simulated LLM routes, seen from a WebSocket client of chatd.

Small talk is answered directly, several requests in one message run several
tools, and a follow-up in a session leans on the question before it.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio

from chatd.testing import ChatClient, Chatd

TOOL_EVENTS = {"tool_start", "tool_end"}


async def ask(client: ChatClient, request_id: str, message: str, **fields: Any) -> dict[str, Any]:
    with trio.fail_after(10):
        await client.chat(request_id, message, **fields)
        return await client.finish(request_id)


def tool_starts(client: ChatClient, request_id: str) -> list[dict[str, Any]]:
    return [e for e in client.events[request_id] if e["type"] == "tool_start"]


@pytest.mark.parametrize(
    ("message", "words"),
    [("hi", ["Hi there!", "help"]), ("thanks!", ["You're welcome"])],
)
async def test_small_talk_is_answered_directly(
    chatd: Chatd, client: ChatClient, message: str, words: list[str]
) -> None:
    """Greetings and thanks take the direct path: no tool runs, one LLM call."""
    done = await ask(client, "a", message)
    assert done["type"] == "done" and done["path"] == "direct"
    route = await client.wait_for("a", "route")
    assert route["path"] == "direct" and route["tools"] == []
    assert not TOOL_EVENTS & set(client.types("a"))
    answer = client.answer("a")
    for word in words:
        assert word in answer
    assert chatd.sim is not None
    assert chatd.sim.statistics().requests == 1


async def test_two_requests_in_one_message_are_both_answered(client: ChatClient) -> None:
    """A sum and an FAQ question run the calculator and the FAQ; the answer has both."""
    done = await ask(client, "m", "what's 2+2 and how do I reset my password")
    assert done["path"] == "tools"
    route = await client.wait_for("m", "route")
    assert route["tools"] == ["calculator", "frequently_asked"]
    # The two tools run side by side: their tool_start events come in either order.
    started = sorted((e["tool"], orjson.dumps(e["arguments"])) for e in tool_starts(client, "m"))
    assert started == [
        ("calculator", b'{"expression":"2+2"}'),
        ("frequently_asked", b'{"question":"how do I reset my password"}'),
    ]
    answer = client.answer("m")
    assert "2+2 = 4" in answer
    assert "Forgot password" in answer  # the password-reset FAQ entry's answer


async def router_call(chatd: Chatd) -> tuple[str, dict[str, Any]]:
    """What the simulator, asked again exactly what chatd last asked it, calls."""
    assert chatd.sim is not None
    body = {**chatd.sim.last_request.body, "stream": False}
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{chatd.sim.base_url}/chat/completions", json=body)
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    return call["function"]["name"], orjson.loads(call["function"]["arguments"])


async def test_follow_up_in_a_session_asks_about_the_earlier_topic(
    chatd: Chatd, client: ChatClient
) -> None:
    """A follow-up after a returns question reaches the simulator with that
    question before it, and the simulator asks the FAQ about returns."""
    await ask(client, "r1", "How do I return an item?", session="s1")
    done = await ask(client, "r2", "and how long does that take?", session="s1")
    assert done["type"] == "done"
    assert chatd.sim is not None
    said = [m["content"] for m in chatd.sim.last_request.body["messages"] if m["role"] == "user"]
    assert said == ["How do I return an item?", "and how long does that take?"]
    name, arguments = await router_call(chatd)
    assert name == "frequently_asked"
    assert "return" in arguments["question"].lower()
    assert "how long does that take" in arguments["question"]


async def test_follow_up_tool_call_carries_the_earlier_topic(client: ChatClient) -> None:
    """The frequently_asked call chatd runs for the follow-up mentions returns."""
    await ask(client, "r1", "How do I return an item?", session="s2")
    await ask(client, "r2", "and how long does that take?", session="s2")
    [start] = tool_starts(client, "r2")
    assert start["tool"] == "frequently_asked"
    assert "return" in start["arguments"]["question"].lower()
