"""One streamed LLM call's events: SSE decoded, tool calls assembled, and the
call's deadlines kept (time to first token, the gap between deltas, the whole
call) in one cancel scope around it, moved as the stream goes. A fast stream
is read a window at a time (``coalesce_s``): one read carries every token that
came meanwhile, and the first is never delayed. Made by
:class:`~chatd.llm.client.LLMClient`.
"""

from __future__ import annotations

import collections
import contextlib
import math
import typing
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import httpx
import trio

from chatd.config import LLMTimeouts
from chatd.exceptions import UpstreamProtocolError
from chatd.llm.openai import ChunkAssembler, parse_completion
from chatd.llm.sse import SSEDecoder
from chatd.llm.transport import BODY, ResponseBody
from chatd.llm.types import ChatEvent, Completion, TextDelta
from chatd.ticks import sleep_until_tick

__all__ = ["LLMStream", "unwind"]

_DRAIN_AFTER_DONE_S = 1.0
_WAITED_S = 0.001
"""A read that took longer had to wait for the server."""

_SLACK = 0.125
"""How late, as a share of ``gap_s``, a gap timeout may fire: the deadline is
moved only when it would fire early, so a steady stream moves it about every
``gap_s / 8`` rather than on every read."""


@attrs.define
class LLMStream:
    """The events of one streamed call; iterate with ``async for``.

    Its deadlines are one cancel scope around the whole call (``scope``,
    which :meth:`LLMClient.stream` owns), moved as the phases go: until the
    first delta, ``ttft_s`` from the start; then ``gap_s`` from the start of
    each read, moved forward only when it would otherwise fire early (so a
    gap timeout fires between ``gap_s`` and ``1.125 * gap_s`` of silence);
    after ``[DONE]``, a second to read the body's end. None of them passes
    ``total_s``. Nothing is entered or left per read.

    With ``coalesce_s``, a stream whose pieces come faster than that waits
    so long after each read (rounded to a shared tick, see
    :func:`chatd.ticks.sleep_until_tick`) that one read carries everything the
    server sent meanwhile; the first delta is never delayed, and the read
    after it always waits (so the first two frames are a window apart).
    """

    _response: httpx.Response
    _timeouts: LLMTimeouts
    _started_at: float
    _total_deadline: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """The call's deadline scope."""
    coalesce_s: float = 0.0
    _body: ResponseBody | None = None
    _pending: collections.deque[ChatEvent] = attrs.field(factory=collections.deque)
    _chunks: AsyncGenerator[bytes, None] | None = None
    _decoder: SSEDecoder = attrs.field(factory=SSEDecoder)
    _assembler: ChunkAssembler = attrs.field(factory=ChunkAssembler)
    _last_output: float | None = None
    _last_read: float = -math.inf
    _fast: bool = False
    _phase: str = "ttft"
    """The phase the scope's deadline is set for."""
    _reading: bool = False
    _finished: bool = False
    completion: Completion | None = None
    """Set once the stream has ended well."""

    def __attrs_post_init__(self) -> None:
        body = self._response.extensions.get(BODY)
        if isinstance(body, ResponseBody):
            self._body = body

    @property
    def expired_phase(self) -> str:
        """What the deadline was guarding when it fired: a phase of the call
        (``ttft``, ``gap``, ``total``), or ``reader`` if it fired
        while the caller, not the LLM, kept the stream waiting."""
        return self._phase if self._reading else "reader"

    async def aclose(self) -> None:
        """Close the body iterator, where httpx's is used (the caller closes the response).

        httpx's body iterators are async generators nested three deep; closing
        only the outermost leaves the inner ones to the garbage collector (a
        ResourceWarning under trio). Resuming the chain in a cancelled scope
        unwinds every level at its next checkpoint.
        """
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await unwind(chunks)

    def __aiter__(self) -> LLMStream:
        return self

    async def read_to_end(self) -> None:
        """Read what is left of the body (after the completion: its end)."""
        while not self._finished:
            await self._read()

    async def __anext__(self) -> ChatEvent:
        while not self._pending:
            if self._finished:
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    def _arm(self, now: float, *, first: bool = False) -> None:
        """Move the gap deadline for the read starting ``now``, if it would fire
        early (or, after the first delta, replace the ttft deadline)."""
        gap = self._timeouts.gap_s
        if first or self.scope.deadline < now + gap:
            deadline = min(now + gap * (1 + _SLACK), self._total_deadline)
            self.scope.deadline = deadline
            self._phase = "total" if deadline >= self._total_deadline else "gap"

    async def _next_chunk(self) -> bytes | None:
        """The next piece of the body (``None`` at the end)."""
        if self._body is not None:
            return await self._body.receive_some()
        if self._chunks is None:
            # httpx types it as an iterator; it is an async generator
            self._chunks = typing.cast(AsyncGenerator[bytes, None], self._response.aiter_raw())
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def _read(self) -> None:
        if self._assembler.done:  # after [DONE]: read to the end so the connection is reused
            with trio.move_on_after(_DRAIN_AFTER_DONE_S) as lingering:
                self._finished = await self._read_chunk() is None
            self._finished = self._finished or lingering.cancelled_caught
            return
        if self._last_output is not None:
            if self._fast:
                await sleep_until_tick(self._last_read + self.coalesce_s)
            self._arm(trio.current_time())
        asked = trio.current_time()
        chunk = await self._read_chunk()
        now = trio.current_time()
        # Data already there when asked for: it comes faster than the window
        # (a read that had to wait means it comes slower, so do not wait next).
        self._fast = now - asked < _WAITED_S and self.coalesce_s > 0
        self._last_read = now
        if chunk is None:
            events = self._assembler.feed(self._decoder.close())
            self._finished = True
        else:
            events = self._assembler.feed(self._decoder.feed(chunk))
        if events:
            first = self._last_output is None
            self._last_output = now
            if first:  # from now on, the gap phase
                self._arm(now, first=True)
                # The first delta went at once; the next read waits a window,
                # whatever the pace (one wait per stream if it is slow).
                self._fast = self.coalesce_s > 0
            self._pending.extend(events)
        if self._assembler.done or chunk is None:
            self.completion = self._assembler.finish()
            self._pending.append(self.completion)

    async def _read_chunk(self) -> bytes | None:
        self._reading = True  # left set if the read is cancelled: the deadline hit the LLM
        try:
            chunk = await self._next_chunk()
        except httpx.HTTPError as exc:
            raise UpstreamProtocolError(
                f"LLM connection broke mid-stream: {exc or type(exc).__name__}"
            ) from exc
        self._reading = False
        return chunk

    @classmethod
    def of_completion(
        cls, response: httpx.Response, timeouts: LLMTimeouts, body: bytes
    ) -> LLMStream:
        """A stream over a plain JSON answer (``stream`` false, or a server ignoring it)."""
        completion = parse_completion(body)
        now = trio.current_time()
        stream = cls(response, timeouts, now, now, finished=True, completion=completion)
        if completion.content:
            stream._pending.append(TextDelta(completion.content))
        stream._pending.append(completion)
        return stream


async def unwind(chunks: AsyncGenerator[Any, None]) -> None:
    """Finish httpx's body iterator and every generator nested inside it.

    They are async generators several deep; ``aclose()`` on the outermost
    leaves the inner ones to the garbage collector, which trio reports as a
    ResourceWarning. Resuming the chain in a cancelled scope instead raises
    Cancelled at the innermost checkpoint, which unwinds every level;
    exhausted chains stop at once.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        with contextlib.suppress(StopAsyncIteration, httpx.HTTPError):
            while True:
                await chunks.__anext__()
    await chunks.aclose()
