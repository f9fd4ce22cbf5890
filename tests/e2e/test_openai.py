"""OpenAI's Chat Completions API, driven by the official ``openai`` SDK (sync
and async, streamed and not): answers, usage, chatd's extension member,
history, every error as the SDK's own exception class, and a closed stream
closing the upstream one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
import trio

from chatd.config import LimitsSettings, ServerSettings, SimSettings
from chatd.pipeline import chat as chat_module
from chatd.testing import Chatd, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

# The SDK stops reading a stream at [DONE] and leaves its async generators
# (and httpx's under them) to the garbage collector, where trio's finalizer
# warns that they were not exhausted: the client's doing, not chatd's.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

KEY = "sk-chatd-test"
FAQ = "How do I reset my password?"


@pytest.fixture
async def server(make_settings: MakeSettings) -> AsyncIterator[Chatd]:
    settings = make_settings(server=ServerSettings(api_keys=[KEY]))
    async with open_chatd(settings) as running:
        yield running


_clients: list[openai.OpenAI | openai.AsyncOpenAI] = []
"""The SDK clients a test made: closed after it (their pooled sockets with them)."""


def sync_client(server: Chatd, key: str = KEY) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    _clients.append(client)
    return client


def async_client(server: Chatd, key: str = KEY) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Left open, a client's sockets are closed by the garbage collector in some
    later test, whose ResourceWarning then fails that test instead."""
    yield
    while _clients:
        client = _clients.pop()
        if isinstance(client, openai.AsyncOpenAI):
            await client.close()
        else:
            await trio.to_thread.run_sync(client.close)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """A call of the blocking SDK, off the event loop."""
    return await trio.to_thread.run_sync(fn)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_models_lists_chatd(server: Chatd) -> None:
    models = await in_thread(lambda: sync_client(server).models.list())
    assert [m.id for m in models.data] == ["chatd"]


async def test_a_faq_answer_not_streamed(server: Chatd) -> None:
    """The sync SDK gets the FAQ's answer, usage, and Path B in chatd's member."""
    completion = await in_thread(
        lambda: sync_client(server).chat.completions.create(model="chatd", messages=user(FAQ))
    )
    assert completion.object == "chat.completion"
    assert completion.model == "chatd"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert "password" in (choice.message.content or "").lower()
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extension = completion.model_extra["chatd"]
    assert extension["path"] == "tool_stream"
    assert completion.id == "chatcmpl-" + extension["request_id"]
    kinds = [event["type"] for event in extension["events"]]
    assert kinds[:1] == ["tool_start"] and "route" in kinds


async def test_a_streamed_answer_with_usage(server: Chatd) -> None:
    """The async SDK streams the answer in deltas, then the usage, then stops;
    tool activity comes as empty deltas with chatd's member."""
    client = async_client(server)
    stream = await client.chat.completions.create(
        model="chatd",
        messages=user("what is 12*7?"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "84" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1
    extension = [(c.model_extra or {}).get("chatd") for c in chunks]
    kinds = [e["type"] for e in extension if e]
    assert kinds[0] == "route" and "tool_start" in kinds and "tool_end" in kinds
    assert kinds[-1] == "done"
    await client.close()


async def test_earlier_messages_are_the_history(server: Chatd) -> None:
    """User and assistant turns before the last reach the LLM; system messages
    do not replace chatd's own."""
    assert server.sim is not None
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
        {"role": "user", "content": "hello again"},
    ]
    await in_thread(
        lambda: sync_client(server).chat.completions.create(model="chatd", messages=messages)
    )
    sent = server.sim.last_request.body["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == [
        "my name is Ada",
        "Hello Ada!",
        "hello again",
    ]
    assert all("pirate" not in str(m.get("content")) for m in sent)


async def test_a_session_keeps_the_conversation(server: Chatd) -> None:
    """With ``user`` naming a session, one message a turn is enough."""
    assert server.sim is not None
    client = sync_client(server)
    for text in ("my name is Ada", "what is my name?"):
        await in_thread(
            lambda text=text: client.chat.completions.create(
                model="chatd", messages=user(text), user="s-ada"
            )
        )
    sent = [m["content"] for m in server.sim.last_request.body["messages"]]
    assert "my name is Ada" in sent


async def test_client_errors_are_the_sdks_exception_classes(server: Chatd) -> None:
    client = sync_client(server)

    def create(**kwargs: Any) -> Any:
        arguments = {"model": "chatd", "messages": user(FAQ), **kwargs}
        return client.chat.completions.create(**arguments)

    with pytest.raises(openai.BadRequestError) as bad:
        await in_thread(lambda: create(messages=[]))
    assert bad.value.code == "bad_request"
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        await in_thread(lambda: create(messages=[{"role": "assistant", "content": "hi"}]))
    with pytest.raises(openai.BadRequestError) as tools:
        await in_thread(lambda: create(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert tools.value.param == "tools"
    with pytest.raises(openai.NotFoundError) as missing:
        await in_thread(lambda: create(model="gpt-4o"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await in_thread(
            lambda: sync_client(server, "sk-wrong").chat.completions.create(
                model="chatd", messages=user(FAQ)
            )
        )
    with pytest.raises(openai.APIStatusError) as large:
        await in_thread(lambda: create(messages=user("x" * 70_000)))
    assert large.value.status_code == 413
    assert large.value.code == "too_large"


async def test_rate_limited_is_a_rate_limit_error_with_retry_after(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(limits=LimitsSettings(rate_per_minute=1))
    async with open_chatd(settings) as server:
        client = async_client(server)
        await client.chat.completions.create(model="chatd", messages=user("hi"))
        with pytest.raises(openai.RateLimitError) as refused:
            stream = await client.chat.completions.create(
                model="chatd", messages=user("hi"), stream=True
            )
            async for _ in stream:
                pass
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert refused.value.code == "rate_limited"
        await client.close()


async def test_a_draining_server_is_a_503(server: Chatd) -> None:
    server.pipeline.start_draining()
    with pytest.raises(openai.InternalServerError) as refused:
        await in_thread(
            lambda: sync_client(server).chat.completions.create(model="chatd", messages=user(FAQ))
        )
    assert refused.value.status_code == 503
    assert refused.value.code == "shutting_down"


@pytest.fixture
def exploding_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the prompt raises an unexpected exception (a bug) for one message."""
    build = chat_module.build_prompt

    def build_or_explode(system: str, history: Any, message: str, budget: int) -> Any:
        if "explode" in message:
            raise ValueError("a bug in the pipeline")
        return build(system, history, message, budget)

    monkeypatch.setattr(chat_module, "build_prompt", build_or_explode)


async def test_a_bug_is_a_500_and_ends_only_its_request(
    server: Chatd, exploding_prompt: None
) -> None:
    client = async_client(server)
    with pytest.raises(openai.InternalServerError) as crashed:
        await client.chat.completions.create(model="chatd", messages=user("how do I explode?"))
    assert crashed.value.status_code == 500
    assert "a bug" not in crashed.value.message
    with pytest.raises(openai.APIError):  # after the stream started: an error event
        stream = await client.chat.completions.create(
            model="chatd", messages=user("how do I explode?"), stream=True
        )
        async for _ in stream:
            pass
    answer = await client.chat.completions.create(model="chatd", messages=user(FAQ))
    assert answer.choices[0].message.content
    await client.close()


async def test_closing_a_stream_closes_the_upstream_stream(make_settings: MakeSettings) -> None:
    settings = make_settings(sim=SimSettings(ttft_ms=10, tokens_per_s=20))
    async with open_chatd(settings) as server:
        assert server.sim is not None
        client = async_client(server)
        stream = await client.chat.completions.create(
            model="chatd", messages=user("tell me a story"), stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert server.sim.stats.active == 1
        await stream.close()
        await wait_until(lambda: server.sim is not None and server.sim.stats.active == 0, within=5)
        assert server.sim.stats.client_disconnects == 1
        await wait_until(lambda: not server.running.state.pipeline.requests, within=5)
        await client.close()


async def test_plain_http_without_json_content_type_is_refused(server: Chatd) -> None:
    """As with /v1/chat: no page can post a CORS-simple text/plain chat."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/chat/completions",
            content=b'{"model": "chatd", "messages": []}',
            headers={"content-type": "text/plain", "authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 415


async def test_sync_streaming_and_async_whole_answers(server: Chatd) -> None:
    """The other two combinations: the sync SDK streaming, the async one not."""

    def stream_sync() -> tuple[str, list[str | None]]:
        stream = sync_client(server).chat.completions.create(
            model="chatd", messages=user(FAQ), stream=True
        )
        with stream:
            chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0].finish_reason for c in chunks if c.choices]

    text, finishes = await in_thread(stream_sync)
    assert "password" in text.lower() and finishes[-1] == "stop"
    client = async_client(server)
    whole = await client.chat.completions.create(model="chatd", messages=user(FAQ))
    assert whole.choices[0].message.content == text
    assert whole.model_extra["chatd"]["cached"] is True  # the same question, answered before
    await client.close()
