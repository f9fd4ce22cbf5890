"""A chat leaves no reference cycles: refcounting frees everything it made.

``chatd serve`` keeps Python's cycle collector from running on its own (its
pauses held every stream; chatd.server.heap) and collects only every
``janitor.gc_interval_s``. That is sound only while requests make no cycles:
each case below runs chats with the collector off and then asks it what it
would have had to free. (The in-process simulator and client count too; they
make none either.)
"""

from __future__ import annotations

import collections
import gc
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio

from chatd.testing import ChatClient, Chatd, open_chat_client


@pytest.fixture
def no_collector() -> Iterator[Callable[[], collections.Counter[str]]]:
    """Collector off and keeping what it finds; call the fixture's value for
    what a collection now would free, by type."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def garbage() -> collections.Counter[str]:
        gc.collect()
        found = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        # Saved garbage still holds its cycles: free it for real, or the next
        # call finds it again (a failed test's traceback, dropped by pytest
        # once the next test starts, is one such).
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        return found

    try:
        garbage()  # whatever the fixtures before this made
        yield garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def ask(client: ChatClient, request_id: str, message: str) -> None:
    with trio.fail_after(10):
        await client.chat(request_id, message)
        await client.finish(request_id)


async def cancel_mid_answer(client: ChatClient, request_id: str, message: str) -> None:
    with trio.fail_after(10):
        await client.chat(request_id, message)
        await client.wait_for(request_id, "token")
        await client.send({"type": "cancel", "id": request_id})
        await client.finish(request_id)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (ask, "tell me something about the sea"),  # direct
        (ask, "What is 12*7?"),  # Path A: a tool, then a second LLM call
        (ask, "How do I reset my password?"),  # Path B: the FAQ streams the answer
        (cancel_mid_answer, "tell me a long story about the sea"),
    ],
)
async def test_chats_leave_no_cycles(
    chatd: Chatd,
    client: ChatClient,
    no_collector: Callable[[], collections.Counter[str]],
    how: Callable[[ChatClient, str, str], Awaitable[None]],
    message: str,
) -> None:
    """Ten chats (each its own question, so no cache or flight serves it)."""
    await ask(client, "warm", "hello there")  # first-use state: pools, caches
    no_collector()
    for index in range(10):
        await how(client, f"r{index}", f"{message} ({index})")
    await trio.sleep(0.1)  # let every request's task end
    assert no_collector() == collections.Counter()


async def test_a_connection_per_chat_leaves_no_cycles(
    chatd: Chatd, no_collector: Callable[[], collections.Counter[str]]
) -> None:
    """Opening and closing WebSockets (chatd's and the handshake's objects)."""
    async with open_chat_client(chatd.ws_url) as first:
        await ask(first, "warm", "hello there")
    no_collector()
    for index in range(10):
        async with open_chat_client(chatd.ws_url) as client:
            await ask(client, "q", f"hello again ({index})")
    await trio.sleep(0.1)
    assert no_collector() == collections.Counter()
