"""One chat over an open WebSocket, as the benchmark scripts send it and read it back.

:func:`ask` sends a ``chat`` frame and reads that request's events (other
requests' are skipped) to its terminal one, noting what a benchmark counts
(:func:`note_event`): frames, token frames, the first token's time, the path,
the terminal event. :class:`Replies` sums replies, :func:`sum_over_connections` those of
every connection at once. The virtual users of
:mod:`loadgen.users` read their own frames, as they may cancel or drop a
request mid-answer, and note them with :func:`note_event` too.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

__all__ = [
    "Replies",
    "Reply",
    "ask",
    "cancel_frame",
    "chat_frame",
    "note_event",
    "on_every_connection",
    "open_connections",
    "sum_over_connections",
]

R = TypeVar("R", bound="Replies")


def chat_frame(request_id: str, message: object) -> str:
    """The ``chat`` frame of ``message`` (any JSON value: a bad one is refused by chatd)."""
    return orjson.dumps({"type": "chat", "id": request_id, "message": message}).decode()


def cancel_frame(request_id: str) -> str:
    """The ``cancel`` frame of request ``request_id``."""
    return orjson.dumps({"type": "cancel", "id": request_id}).decode()


async def open_connections(
    stack: contextlib.AsyncExitStack, url: str, n: int
) -> list[WebSocketConnection]:
    """``n`` WebSockets to ``url``, opened one after another, each closed with ``stack``."""
    return [await stack.enter_async_context(open_websocket_url(url)) for _ in range(n)]


async def on_every_connection(
    sockets: Sequence[WebSocketConnection],
    worker: Callable[..., Awaitable[None]],
    *args: Any,
    timeout_s: float = 300,
) -> None:
    """Run ``worker(ws, index, *args)`` on every connection at once, all within ``timeout_s``."""
    with trio.fail_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for index, ws in enumerate(sockets):
                nursery.start_soon(worker, ws, index, *args)


async def sum_over_connections(
    sockets: Sequence[WebSocketConnection],
    worker: Callable[..., Awaitable[None]],
    *args: Any,
    totals: R,
) -> R:
    """Run ``worker(ws, index, *args, totals)`` on every connection at once, each adding its
    replies to ``totals``; return ``totals``."""
    await on_every_connection(sockets, worker, *args, totals)
    return totals


class Seen(Protocol):
    """What a client notes of a request's frames (:class:`Reply`, ``users.Record``)."""

    frames: int
    token_frames: int
    chars: int
    ttft_s: float | None
    path: str | None


def note_event(seen: Seen, event: dict[str, Any], started: float) -> bool:
    """Note one of a request's events, ``started`` being when its ``chat`` was sent
    (``perf_counter``); whether it is the terminal one."""
    seen.frames += 1
    kind = event["type"]
    if kind == "token":
        seen.token_frames += 1
        seen.chars += len(event["text"])
        if seen.ttft_s is None:
            seen.ttft_s = time.perf_counter() - started
    elif kind == "route":
        seen.path = event["path"]
    return kind in ("done", "error")


@attrs.define
class Reply:
    """What the client saw of one chat, from sending it to its terminal event."""

    terminal: dict[str, Any] = attrs.field(factory=dict)
    """The ``done`` or ``error`` event."""
    ttft_s: float | None = None
    """``chat`` sent to the first ``token`` frame, in seconds (None: no token came)."""
    duration_s: float = 0.0
    """``chat`` sent to the terminal event, in seconds."""
    path: str | None = None
    """From the ``route`` event, if one came."""
    frames: int = 0
    token_frames: int = 0
    chars: int = 0
    """Characters of answer text received."""


async def ask(
    ws: WebSocketConnection,
    request_id: str,
    message: object,
    timeout_s: float = math.inf,
    cancel_at_first_token: bool = False,
) -> Reply:
    """Send one chat and read its events to its terminal one, within ``timeout_s``;
    with ``cancel_at_first_token``, cancel the request once its first token is in."""
    reply = Reply()
    with trio.fail_after(timeout_s):
        started = time.perf_counter()
        await ws.send_message(chat_frame(request_id, message))
        while True:
            event = orjson.loads(await ws.get_message())
            if event.get("id") != request_id:
                continue
            if note_event(reply, event, started):
                reply.duration_s = time.perf_counter() - started
                reply.terminal = event
                return reply
            if cancel_at_first_token and event["type"] == "token" and reply.token_frames == 1:
                await ws.send_message(cancel_frame(request_id))


@attrs.define
class Replies:
    """Replies summed: answers and what their ``done`` events say, errors by code, frames,
    and the client's timings."""

    answers: int = 0
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """``error`` events, by code."""
    frames: int = 0
    token_frames: int = 0
    tokens: int = 0
    """The answers' ``usage.completion_tokens``, summed."""
    cached: int = 0
    shared: int = 0
    paths: collections.Counter[str] = attrs.field(factory=collections.Counter)
    ttft_s: list[float] = attrs.field(factory=list)
    """Client-measured: ``chat`` sent to the first ``token`` frame."""
    durations: list[float] = attrs.field(factory=list)
    """Client-measured, of answers: ``chat`` sent to its ``done``, in seconds."""
    server_ttft_ms: list[float] = attrs.field(factory=list)

    def add(self, reply: Reply) -> None:
        """Count one reply in."""
        self.frames += reply.frames
        self.token_frames += reply.token_frames
        if reply.ttft_s is not None:
            self.ttft_s.append(reply.ttft_s)
        event = reply.terminal
        if event["type"] == "error":
            self.errors[event.get("code", "?")] += 1
            return
        self.answers += 1
        self.tokens += event["usage"]["completion_tokens"]
        self.paths[event["path"]] += 1
        self.cached += bool(event.get("cached"))
        self.shared += bool(event.get("shared"))
        self.durations.append(reply.duration_s)
        if event["timings"].get("ttft_ms") is not None:
            self.server_ttft_ms.append(event["timings"]["ttft_ms"])

    def merge(self, other: Replies) -> None:
        """Add another tally's counts and timings to this one."""
        for name in ("answers", "frames", "token_frames", "tokens", "cached", "shared"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.paths.update(other.paths)
        self.ttft_s.extend(other.ttft_s)
        self.durations.extend(other.durations)
        self.server_ttft_ms.extend(other.server_ttft_ms)
