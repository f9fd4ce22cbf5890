"""The simulator over real loopback HTTP: OpenAI's wire format, timing, control endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from chatd.config import SimSettings
from chatd.exceptions import ConfigError
from chatd.llm.sim import SimServer, default_rules, plan_reply, serve_sim_llm

from .openai_wire import COMPLETIONS, DONE, TOOLS, chat, content_of, read_events

GUARD_S = 10


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    async with client.stream("POST", COMPLETIONS, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return await read_events(response)


async def test_text_stream_is_well_formed_and_ends_with_done(
    client: httpx.AsyncClient,
) -> None:
    """Chunks share id, created and model; role first, text, then stop and [DONE]."""
    text = "I love sunny mornings"
    with trio.fail_after(GUARD_S):
        events = await stream(client, chat(text))
    assert events[-1] == DONE
    chunks = events[:-1]
    assert all(isinstance(c, dict) for c in chunks)
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "test-model", "chat.completion.chunk")
    }
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    expected = plan_reply(chat(text), default_rules())
    assert content_of(events) == expected.text
    assert len(chunks) > 10  # one chunk a token, not one lump


async def test_tool_calls_stream_as_openai_does(client: httpx.AsyncClient) -> None:
    """Id and name come first, then arguments over several chunks that make valid JSON."""
    body = chat("what is 12*(3+4) and what time is it?", tools=TOOLS)
    with trio.fail_after(GUARD_S):
        events = await stream(client, body)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    heads = [d["tool_calls"][0] for d in deltas if "id" in d.get("tool_calls", [{}])[0]]
    assert [(h["index"], h["type"], h["function"]) for h in heads] == [
        (0, "function", {"name": "calculator", "arguments": ""}),
        (1, "function", {"name": "clock", "arguments": ""}),
    ]
    assert all(h["id"].startswith("call_") for h in heads)
    assert deltas[0]["role"] == "assistant"
    pieces: dict[int, list[str]] = {0: [], 1: []}
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            if "id" not in call:
                assert set(call) == {"index", "function"}
                pieces[call["index"]].append(call["function"]["arguments"])
    assert len(pieces[0]) >= 2
    assert orjson.loads("".join(pieces[0])) == {"expression": "12*(3+4)"}
    assert orjson.loads("".join(pieces[1])) == {}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_non_streamed_text_answer(client: httpx.AsyncClient) -> None:
    """stream false: one chat.completion with the message, finish reason and usage."""
    with trio.fail_after(GUARD_S):
        response = await client.post(COMPLETIONS, json=chat("hello there", stream=False))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "test-model"
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == plan_reply(chat("hello there"), default_rules()).text
    assert choice["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["completion_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_non_streamed_tool_calls(client: httpx.AsyncClient) -> None:
    """stream false with a tool call: content null, tool_calls with whole arguments."""
    body = chat("where is my order?", stream=False, tools=TOOLS)
    with trio.fail_after(GUARD_S):
        answer = (await client.post(COMPLETIONS, json=body)).json()
    message = answer["choices"][0]["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "frequently_asked"
    assert orjson.loads(call["function"]["arguments"]) == {"question": "where is my order?"}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


async def test_usage_chunk_when_asked(client: httpx.AsyncClient) -> None:
    """include_usage adds a last chunk with no choices; the others carry usage null."""
    body = chat("hello there", stream_options={"include_usage": True})
    with trio.fail_after(GUARD_S):
        events = await stream(client, body)
    *chunks, usage_chunk, done = events
    assert done == DONE
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == len(
        [c for c in chunks if c["choices"][0]["delta"].get("content")]
    )
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(c["usage"] is None for c in chunks)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_stops_with_length(client: httpx.AsyncClient, field: str) -> None:
    """The answer stops after max_tokens content tokens, with finish_reason length."""
    with trio.fail_after(GUARD_S):
        events = await stream(client, chat("hello there", **{field: 3}))
    contents = [e["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert len([c for c in contents if c]) == 3
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_first_token_waits_for_ttft(sim: SimServer, client: httpx.AsyncClient) -> None:
    """With ttft_ms=200 the first content arrives no sooner than 200 ms after asking."""
    response = await client.post("/_sim/timing", json={"ttft_ms": 200})
    assert response.json() == {"ttft_ms": 200.0, "tokens_per_s": 5000.0}
    first_content_at = None
    with trio.fail_after(GUARD_S):
        start = trio.current_time()
        async with client.stream("POST", COMPLETIONS, json=chat("hi")) as answer:
            async for line in answer.aiter_lines():
                if (
                    first_content_at is None
                    and '"content":"' in line
                    and '"content":""' not in line
                ):
                    first_content_at = trio.current_time()
    assert first_content_at is not None
    assert first_content_at - start >= 0.2


async def test_tokens_are_paced(sim: SimServer, client: httpx.AsyncClient) -> None:
    """At 100 tokens/s, n tokens take at least (n - 1) / 100 s after the first."""
    sim.set_timing(ttft_ms=0, tokens_per_s=100)
    with trio.fail_after(GUARD_S):
        start = trio.current_time()
        events = await stream(client, chat("hi", max_tokens=11))
    assert len([e for e in events if e != DONE and e["choices"][0]["delta"].get("content")]) == 11
    assert trio.current_time() - start >= 0.1


async def test_models_lists_the_simulator(client: httpx.AsyncClient) -> None:
    """GET /v1/models answers an OpenAI model list."""
    with trio.fail_after(GUARD_S):
        models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "chatd-sim"


async def test_last_request_shows_headers_and_body(client: httpx.AsyncClient) -> None:
    """The last completion call's headers (lower-cased, credentials masked) and
    JSON body are kept."""
    headers = {"Authorization": "Bearer sk-test", "X-Extra": "yes"}
    body = chat("hello", stream=False)
    with trio.fail_after(GUARD_S):
        await client.post(COMPLETIONS, json=body, headers=headers)
        last = (await client.get("/_sim/last_request")).json()
    assert last["headers"]["authorization"] == "Bearer ***"
    assert last["headers"]["x-extra"] == "yes"
    assert last["body"] == body


async def test_keep_alive_reuses_one_connection(client: httpx.AsyncClient) -> None:
    """Two requests in a row travel over the same TCP connection."""
    ports = []
    with trio.fail_after(GUARD_S):
        for _ in range(2):
            async with client.stream("POST", COMPLETIONS, json=chat("hi")) as response:
                await read_events(response)
                sock = response.extensions["network_stream"].get_extra_info("socket")
                ports.append(sock.getsockname()[1])
    assert ports[0] == ports[1]


async def test_unknown_path_is_404_json(client: httpx.AsyncClient) -> None:
    """An unknown path gets 404 with an OpenAI-style error body."""
    with trio.fail_after(GUARD_S):
        response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    """A known path with the wrong method says which methods it takes."""
    with trio.fail_after(GUARD_S):
        response = await client.get(COMPLETIONS)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        b'{"messages": []}',
        b'{"messages": [{"role": "user"}], "max_tokens": 0}',
    ],
)
async def test_bad_completion_body_is_400(
    sim: SimServer, client: httpx.AsyncClient, content: bytes
) -> None:
    """A body that is not a valid request gets 400 with an OpenAI-style error."""
    with trio.fail_after(GUARD_S):
        response = await client.post(COMPLETIONS, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert sim.statistics().requests == 1
    assert sim.statistics().active == 0


async def test_timing_endpoint_rejects_bad_values(client: httpx.AsyncClient) -> None:
    """Timing must be numbers in range; a bad one is 400 and changes nothing."""
    with trio.fail_after(GUARD_S):
        bad = await client.post("/_sim/timing", json={"tokens_per_s": 0})
        unknown = await client.post("/_sim/timing", json={"speed": 3})
        now = (await client.get("/_sim/timing")).json()
    assert bad.status_code == unknown.status_code == 400
    assert now == {"ttft_ms": 5.0, "tokens_per_s": 5000.0}


async def test_bad_rules_file_fails_before_listening(tmp_path: Path) -> None:
    """serve_sim_llm raises the rules file's ConfigError instead of starting."""
    path = tmp_path / "rules.json"
    path.write_text("[{]")
    with trio.fail_after(GUARD_S), pytest.raises(ConfigError, match=r"rules\.json"):
        await serve_sim_llm(SimSettings(rules=str(path)))


async def test_cancelling_the_server_closes_its_connections() -> None:
    """Cancelling serve_sim_llm ends a stream in flight: the client sees the connection go."""
    server_scope = trio.CancelScope()

    async def run_sim(task_status: trio.TaskStatus[SimServer]) -> None:
        with server_scope:
            await serve_sim_llm(SimSettings(ttft_ms=0, tokens_per_s=50), task_status=task_status)

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            sim: SimServer = await nursery.start(run_sim)
            async with (
                httpx.AsyncClient(base_url=sim.base_url) as client,
                client.stream("POST", "/chat/completions", json=chat("hi")) as response,
            ):
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("data: ")
                server_scope.cancel()
                with pytest.raises(httpx.RemoteProtocolError):
                    async for _ in lines:
                        pass
                await lines.aclose()
