"""Test support, like ``trio.testing``: run chatd for real and talk to it.

:func:`open_chatd` starts the simulated LLM and chatd on free loopback ports
inside the caller's nursery, with any extra tools you want to test;
:class:`ChatClient` is a small WebSocket client that sorts events by request
id. Tests of chatd use them, and so can tests of your own tools.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from chatd.config import Settings
from chatd.llm.sim import SimServer, serve_sim_llm
from chatd.pipeline import Pipeline
from chatd.server.serve import Running, serve
from chatd.tools.base import Tool
from chatd.trio_websocket_compat import close_stream

__all__ = ["ChatClient", "Chatd", "open_chat_client", "open_chatd", "wait_until"]

TERMINAL = frozenset({"done", "error"})


@attrs.frozen
class Chatd:
    """A running chatd and its simulated LLM."""

    running: Running
    sim: SimServer | None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.running.url

    @property
    def ws_url(self) -> str:
        """The chat WebSocket's URL."""
        return self.running.url.replace("http", "ws", 1) + "/v1/ws"

    @property
    def pipeline(self) -> Pipeline:
        """The server's pipeline, to look inside."""
        return self.running.state.pipeline


@asynccontextmanager
async def open_chatd(
    settings: Settings, *, extra_tools: Sequence[Tool] = ()
) -> AsyncIterator[Chatd]:
    """chatd on a free port with its own simulator (unless ``llm.url`` is set)."""
    settings = attrs.evolve(settings, server=attrs.evolve(settings.server, port=0))
    async with trio.open_nursery() as nursery:
        sim: SimServer | None = None
        if settings.llm.url is None:
            sim = await nursery.start(serve_sim_llm, settings.sim)
            settings = attrs.evolve(settings, llm=attrs.evolve(settings.llm, url=sim.base_url))
        running: Running = await nursery.start(
            lambda task_status: serve(
                settings, handle_signals=False, extra_tools=extra_tools, task_status=task_status
            )
        )
        yield Chatd(running, sim)
        nursery.cancel_scope.cancel()


@attrs.define
class ChatClient:
    """A WebSocket client that keeps every event, sorted by request id."""

    ws: WebSocketConnection
    read_delay_s: float = 0.0
    """A pause after each frame read: a slow reader."""
    events: dict[str | None, list[dict[str, Any]]] = attrs.field(
        factory=lambda: collections.defaultdict(list)
    )
    _arrived: trio.Event = attrs.field(factory=trio.Event)
    gone: trio.Event = attrs.field(factory=trio.Event)
    """Set once the connection has closed and every frame before it was read."""

    async def send(self, frame: Mapping[str, Any] | str) -> None:
        """Send a frame (an object is JSON-encoded; a string goes as is)."""
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        await self.ws.send_message(text)

    async def chat(self, request_id: str, message: str, **fields: Any) -> None:
        """Send a ``chat``."""
        await self.send({"type": "chat", "id": request_id, "message": message, **fields})

    async def receive_forever(self) -> None:
        """Read frames until the connection closes (run it in a nursery)."""
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                self.gone.set()
                self._arrived.set()
                return
            event = orjson.loads(message)
            self.events[event.get("id")].append(event)
            self._arrived.set()
            self._arrived = trio.Event()
            if self.read_delay_s:
                await trio.sleep(self.read_delay_s)

    async def drop(self) -> None:
        """Drop the TCP connection, as a network failure would: no close handshake."""
        await close_stream(self.ws)

    async def wait_for(self, request_id: str | None, event_type: str) -> dict[str, Any]:
        """The first event of ``event_type`` for ``request_id``, once it has come."""
        while True:
            for event in self.events[request_id]:
                if event["type"] == event_type:
                    return event
            await self._arrived.wait()

    async def finish(self, request_id: str) -> dict[str, Any]:
        """The request's terminal event, once it has come."""
        while True:
            for event in self.events[request_id]:
                if event["type"] in TERMINAL:
                    return event
            await self._arrived.wait()

    async def finish_or_gone(self, request_id: str) -> dict[str, Any] | None:
        """The request's terminal event, or ``None`` if the connection closed
        without one (the server dropped it)."""
        while True:
            for event in self.events[request_id]:
                if event["type"] in TERMINAL:
                    return event
            if self.gone.is_set():
                return None
            await self._arrived.wait()

    def answer(self, request_id: str) -> str:
        """The request's answer so far: its tokens joined."""
        return "".join(e["text"] for e in self.events[request_id] if e["type"] == "token")

    def types(self, request_id: str | None) -> list[str]:
        """The types of the request's events, in order."""
        return [e["type"] for e in self.events[request_id]]


@asynccontextmanager
async def open_chat_client(
    url: str, *, read_delay_s: float = 0.0, **kwargs: Any
) -> AsyncIterator[ChatClient]:
    """A :class:`ChatClient` connected to ``url``, reading in the background
    (pausing ``read_delay_s`` after each frame: a slow reader)."""
    # The reader outlives the connection: trio-websocket's own reader task hands
    # each frame over one at a time, so a frame that arrived just before the
    # close would hold that task, and the close with it, if nobody took it.
    async with trio.open_nursery() as nursery:
        async with open_websocket_url(url, **kwargs) as ws:
            try:
                client = ChatClient(ws, read_delay_s)
                nursery.start_soon(client.receive_forever)
                yield client
            finally:
                # When the server closes first, trio-websocket (0.12) ends its reader
                # on the TCP close without closing its own stream; close it here.
                await close_stream(ws)
        nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], *, within: float) -> None:
    """Wait until ``predicate()`` holds, failing after ``within`` seconds.

    For watching counters of another component (the simulator's
    ``client_disconnects``, a limiter's occupancy) that have no event to wait on.
    """
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling a counter with no event
            await trio.sleep(0.002)
