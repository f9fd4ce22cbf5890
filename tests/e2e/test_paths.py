"""Each answer path end to end: chatd and the simulated LLM on loopback."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chatd.config import ServerSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings


async def ask(client: ChatClient, request_id: str, message: str, **fields: Any) -> dict[str, Any]:
    with trio.fail_after(10):
        await client.chat(request_id, message, **fields)
        return await client.finish(request_id)


def check_order(client: ChatClient, request_id: str) -> None:
    """accepted first, one terminal last, route before any token, each tool_start
    before its tool_end."""
    types = client.types(request_id)
    assert types[0] == "accepted"
    assert types[-1] in ("done", "error")
    assert sum(t in ("done", "error") for t in types) == 1
    if "token" in types:
        assert types.index("route") < types.index("token")
    assert types.count("route") <= 1
    started: set[str] = set()
    for event in client.events[request_id]:
        if event["type"] == "tool_start":
            started.add(event["call_id"])
        elif event["type"] == "tool_end":
            assert event["call_id"] in started


async def test_direct(chatd: Chatd, client: ChatClient) -> None:
    """Chit-chat is answered directly by the router call's own stream."""
    done = await ask(client, "a", "hello there, nice to meet you")
    assert done["type"] == "done"
    assert done["path"] == "direct"
    assert done["finish_reason"] == "stop"
    assert done["shared"] is False and done["cached"] is False
    assert done["request_id"].startswith("req_")
    assert done["usage"]["completion_tokens"] > 0
    assert set(done["timings"]) == {"queue_ms", "ttft_ms", "total_ms"}
    assert client.answer("a")
    route = await client.wait_for("a", "route")
    assert route["path"] == "direct" and route["tools"] == []
    check_order(client, "a")
    assert chatd.sim is not None
    assert chatd.sim.statistics().requests == 1


async def test_tool_stream_skips_second_llm_call(chatd: Chatd, client: ChatClient) -> None:
    """A confident FAQ match streams the FAQ's answer with no second LLM call (Path B)."""
    done = await ask(client, "b", "How do I reset my password?")
    assert done["path"] == "tool_stream"
    route = await client.wait_for("b", "route")
    assert route == {
        "type": "route",
        "id": "b",
        "path": "tool_stream",
        "tools": ["frequently_asked"],
    }
    end = await client.wait_for("b", "tool_end")
    assert end["ok"] is True and end["tool"] == "frequently_asked"
    assert "password" in client.answer("b").lower()
    check_order(client, "b")
    assert client.types("b").index("tool_end") < client.types("b").index("route")
    assert chatd.sim is not None
    assert chatd.sim.statistics().requests == 1
    # Honest usage: the router's prompt, and the streamed answer (~4 characters a token).
    assert done["usage"]["prompt_tokens"] > 0
    assert done["usage"]["completion_tokens"] >= len(client.answer("b")) // 4 > 0


async def test_a_cached_answer_says_so_and_what_it_cost(client: ChatClient) -> None:
    """The same question again is replayed from the cache: ``cached`` is true
    and the usage is what the answer cost when it was made."""
    first = await ask(client, "g1", "How do I reset my password?")
    again = await ask(client, "g2", "How do I reset my password?")
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["usage"] == first["usage"] and first["usage"]["prompt_tokens"] > 0
    assert client.answer("g2") == client.answer("g1")


async def test_tools_then_second_call(chatd: Chatd, client: ChatClient) -> None:
    """Arithmetic runs the calculator, then a second LLM call quotes its result (Path A)."""
    done = await ask(client, "c", "what is 12*(3+4)?")
    assert done["path"] == "tools"
    start = await client.wait_for("c", "tool_start")
    assert start["tool"] == "calculator"
    assert start["arguments"] == {"expression": "12*(3+4)"}
    end = await client.wait_for("c", "tool_end")
    assert end["ok"] is True and isinstance(end["duration_ms"], int)
    assert "84" in client.answer("c")
    check_order(client, "c")
    assert chatd.sim is not None
    assert chatd.sim.statistics().requests == 2


async def test_two_tools_side_by_side(client: ChatClient) -> None:
    """Two tool calls in one answer both run, and the answer quotes both."""
    await ask(client, "d", "what is 2+3 and what time is it?")
    route = await client.wait_for("d", "route")
    assert route["path"] == "tools"
    assert sorted(route["tools"]) == ["calculator", "clock"]
    ends = [e for e in client.events["d"] if e["type"] == "tool_end"]
    assert {e["tool"] for e in ends} == {"calculator", "clock"}
    assert "2+3 = 5" in client.answer("d")
    assert "It is" in client.answer("d")
    check_order(client, "d")


async def test_unsure_faq_falls_back_to_second_call(client: ChatClient) -> None:
    """An FAQ search that is not confident goes down Path A, not straight to the user."""
    done = await ask(client, "e", "who won the 1998 world cup?")
    assert done["path"] == "tools"
    assert client.types("e").index("tool_end") < client.types("e").index("route")
    check_order(client, "e")


async def test_failing_tool_is_reported_not_fatal(client: ChatClient) -> None:
    """A tool error reaches the client as tool_end ok false and the LLM as a tool error."""
    done = await ask(client, "f", "what is 1/0?")
    assert done["type"] == "done" and done["path"] == "tools"
    end = await client.wait_for("f", "tool_end")
    assert end["ok"] is False
    assert "zero" in end["error"]
    assert "zero" in client.answer("f") and "calculator" not in client.answer("f")
    check_order(client, "f")


async def test_session_history_reaches_the_prompt(chatd: Chatd, client: ChatClient) -> None:
    """With a session, the second turn's prompt holds the first turn."""
    await ask(client, "g1", "hello there, I am Ada", session="s1")
    await ask(client, "g2", "hello again", session="s1")
    assert chatd.sim is not None
    messages = chatd.sim.last_request.body["messages"]
    contents = [m["content"] for m in messages]
    assert contents[0].startswith("You are")  # the system prompt
    assert "hello there, I am Ada" in contents
    assert contents[-1] == "hello again"
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


async def test_many_requests_multiplexed(chatd: Chatd, client: ChatClient) -> None:
    """Twenty requests at once on one socket each get their own answer and one terminal."""
    questions = {
        f"m{i}": q
        for i, q in enumerate(
            ["hello there", "what is 7*6?", "How do I reset my password?", "what time is it?"] * 5
        )
    }
    with trio.fail_after(20):
        for request_id, question in questions.items():
            await client.chat(request_id, question)
        for request_id in questions:
            done = await client.finish(request_id)
            assert done["type"] == "done", done
    for request_id, question in questions.items():
        check_order(client, request_id)
        if "7*6" in question:
            assert "42" in client.answer(request_id)
    assert chatd.pipeline.admission.statistics().llm_streams_in_use == 0


async def test_ping(client: ChatClient) -> None:
    """ping is answered with pong carrying the same id, or none."""
    with trio.fail_after(5):
        await client.send({"type": "ping", "id": "p1"})
        assert await client.wait_for("p1", "pong") == {"type": "pong", "id": "p1"}
        await client.send({"type": "ping"})
        assert await client.wait_for(None, "pong") == {"type": "pong"}


async def test_sessions_belong_to_their_client(make_settings: MakeSettings) -> None:
    """Another client naming the same session does not get its history."""
    settings = make_settings(server=ServerSettings(api_keys=["alice", "bob"]))
    async with open_chatd(settings) as chatd:
        assert chatd.sim is not None
        async with open_chat_client(chatd.ws_url + "?api_key=alice") as alice:
            await ask(alice, "a", "hello there, my secret is 42", session="shared")
        async with open_chat_client(chatd.ws_url + "?api_key=bob") as bob:
            await ask(bob, "b", "hello again", session="shared")
        contents = [m["content"] for m in chatd.sim.last_request.body["messages"]]
        assert not any("secret" in str(c) for c in contents)


async def test_an_answer_past_its_limit_ends_with_length(make_settings: MakeSettings) -> None:
    """limits.max_answer_chars cuts an answer: done with finish_reason length,
    no more text than the limit, its LLM stream closed, and the usage of the
    call it cut counted (estimated: the LLM reported none)."""
    from chatd.config import LimitsSettings
    from chatd.testing import wait_until

    settings = make_settings(limits=LimitsSettings(max_answer_chars=40))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        sim = chatd.sim
        done = await ask(client, "long", "tell me a long story about the sea")
        assert done["finish_reason"] == "length"
        assert 0 < len(client.answer("long")) <= 40
        assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] > 0
        await wait_until(lambda: sim.statistics().active == 0, within=5)


async def test_keyless_sessions_belong_to_their_connection(chatd: Chatd) -> None:
    """Without keys, two users on one address naming the same guessable
    session do not share it (the locker code stays with its owner); an
    unguessable session goes on from any connection."""
    assert chatd.sim is not None
    async with open_chat_client(chatd.ws_url) as first:
        await ask(first, "a", "hello there, my locker code is 4242", session="mine")
    async with open_chat_client(chatd.ws_url) as second:
        await ask(second, "b", "hello again", session="mine")
    contents = [m["content"] for m in chatd.sim.last_request.body["messages"]]
    assert not any("4242" in str(c) for c in contents)

    token = "Kx7fQ2mZ9pL4wR8tV1nB6c"  # 22 URL-safe characters: nobody guesses it
    async with open_chat_client(chatd.ws_url) as first:
        await ask(first, "c", "hello there, my locker code is 5151", session=token)
    async with open_chat_client(chatd.ws_url) as again:
        await ask(again, "d", "hello again", session=token)
    contents = [m["content"] for m in chatd.sim.last_request.body["messages"]]
    assert any("5151" in str(c) for c in contents)


def test_unguessable_session_names() -> None:
    """22+ URL-safe characters with letters and digits; anything shorter or plainer is not."""
    from chatd.pipeline.request import unguessable

    assert unguessable("550e8400-e29b-41d4-a716-446655440000")
    assert unguessable("Kx7fQ2mZ9pL4wR8tV1nB6c")
    assert not unguessable("s1") and not unguessable("my-long-but-plain-session-name")
    assert not unguessable("Kx7fQ2mZ9pL4wR8tV1nB6c!")


@pytest.mark.parametrize("question", ["do you sell umbrellas?", "what is 6*7?"])
async def test_path_a_answers_speak_to_the_user_not_about_tools(
    client: ChatClient, question: str
) -> None:
    """A Path A answer names no tool and quotes no data: an unsure FAQ lookup
    gets a short 'not sure' from the LLM instead of the entries it read."""
    done = await ask(client, "u", question)
    assert done["type"] == "done" and done["path"] == "tools"
    answer = client.answer("u")
    for internal in ("frequently_asked", "calculator", "Based on", "confidence", '{"', "FAQ"):
        assert internal not in answer, answer
    assert len(answer) < 120, answer
