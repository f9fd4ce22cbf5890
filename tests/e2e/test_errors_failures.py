"""The rows of protocol.md's error table for chats that fail once chatd takes
them on, end to end: upstream_unavailable and upstream_error (the LLM
unreachable, or answering 500), timeout (the request's deadline) and
internal (a bug, named by its request id)."""

from __future__ import annotations

import pytest
import trio

from chatd.config import LimitsSettings, LLMSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings, ask


async def test_upstream_unavailable(make_settings: MakeSettings) -> None:
    """An LLM that cannot be reached is upstream_unavailable."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(llm=LLMSettings(url=f"http://127.0.0.1:{port}/v1"))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        error = await ask(client, "a", "hello")
        assert error["code"] == "upstream_unavailable"
        assert "cannot reach the LLM" in error["message"]
        assert error["retry_after_ms"] == 1000  # the table says there is always one


async def test_upstream_error(chatd: Chatd, client: ChatClient) -> None:
    """An LLM answering 500 is upstream_error, with the provider's words."""
    assert chatd.sim is not None
    chatd.sim.set_fault("error", status=500)
    error = await ask(client, "a", "hello")
    assert error["code"] == "upstream_error"
    assert "500" in error["message"]


async def test_request_deadline(make_settings: MakeSettings) -> None:
    """A request past limits.request_timeout_s ends with timeout and its LLM call is closed."""
    settings = make_settings(limits=LimitsSettings(request_timeout_s=0.3))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        assert server.sim is not None
        server.sim.set_fault("hang")
        error = await ask(client, "a", "hello")
        assert error["code"] == "timeout"
        sim = server.sim
        await wait_until(lambda: sim.statistics().client_disconnects >= 1, within=1)


async def test_internal_error_names_the_request(
    chatd: Chatd, client: ChatClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is answered internal, naming the request id to look up in the log."""

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("chatd.pipeline.chat.build_prompt", broken)
    error = await ask(client, "a", "hello")
    assert error["code"] == "internal"
    accepted = client.events["a"][0]
    assert accepted["request_id"] in error["message"]
