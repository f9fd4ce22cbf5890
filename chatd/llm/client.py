"""The LLM client: OpenAI chat completions over httpx, streamed as SSE.

Every phase of a call has its own deadline, all on trio's clock: connect
(httpx), time to first token (from sending the request to the first text or
tool-call delta), the gap between deltas, and the whole call. A breach raises
:class:`~chatd.exceptions.UpstreamTimeout` naming the phase. Every httpx error
is translated here; none escapes this module. Leaving the ``stream()`` block
early, by cancellation or by ``break``, closes the upstream connection at once,
so the provider stops generating.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import ssl
import time
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import certifi
import httpx
import orjson
import trio

from chatd.config import LLMSettings, LLMTimeouts
from chatd.exceptions import (
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatd.llm.body import BodyRead, BrokenBody, direct_reader
from chatd.llm.openai import ChunkAssembler, parse_completion
from chatd.llm.sse import SSEDecoder
from chatd.llm.types import ChatEvent, ChatRequest, Completion, TextDelta

__all__ = ["LLMClient", "LLMStream", "open_llm_client"]

_ERROR_BODY_LIMIT = 64 * 1024
_SHARD_SIZE = 16
_BODY_LIMIT = 16 * 1024 * 1024
_DRAIN_AFTER_DONE_S = 1.0
_CLOSE_TIMEOUT_S = 1.0


def _retry_after_ms(value: str | None) -> int | None:
    """``Retry-After`` as milliseconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None  # a malformed hint is no hint, not an error
    return max(0, int((when.timestamp() - time.time()) * 1000))


def _error_message(body: bytes) -> str:
    """The provider's own words from an error body, JSON or not."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return str(err)[:300]


@attrs.define
class LLMStream:
    """The events of one streamed call; iterate with ``async for``.

    A class, not an async generator, so each read's deadline scope opens and
    closes inside one ``__anext__`` and never spans a ``yield``.
    """

    _response: httpx.Response
    _timeouts: LLMTimeouts
    _started_at: float
    _total_deadline: float
    _pending: collections.deque[ChatEvent] = attrs.field(factory=collections.deque)
    _chunks: AsyncGenerator[bytes, None] | None = None
    _read_body: BodyRead | None = None
    _decoder: SSEDecoder = attrs.field(factory=SSEDecoder)
    _assembler: ChunkAssembler = attrs.field(factory=ChunkAssembler)
    _last_output: float | None = None
    _finished: bool = False
    completion: Completion | None = None
    """Set once the stream has ended well."""

    async def aclose(self) -> None:
        """Close the body iterator (the caller closes the response).

        httpx's body iterators are async generators nested three deep; closing
        only the outermost leaves the inner ones to the garbage collector (a
        ResourceWarning under trio). Resuming the chain in a cancelled scope
        unwinds every level at its next checkpoint.
        """
        chunks, self._chunks = self._chunks, None
        if chunks is None:
            return
        with trio.CancelScope() as unwind:
            unwind.cancel()
            with contextlib.suppress(StopAsyncIteration, httpx.HTTPError):
                while True:
                    await chunks.__anext__()
        await chunks.aclose()

    def __aiter__(self) -> LLMStream:
        return self

    async def __anext__(self) -> ChatEvent:
        while not self._pending:
            if self._finished:
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    def _deadline(self) -> tuple[float, str]:
        if self._assembler.done:
            phase_deadline, phase = trio.current_time() + _DRAIN_AFTER_DONE_S, "drain"
        elif self._last_output is None:
            phase_deadline, phase = self._started_at + self._timeouts.ttft_s, "ttft"
        else:
            phase_deadline, phase = self._last_output + self._timeouts.gap_s, "gap"
        if self._total_deadline <= phase_deadline:
            return self._total_deadline, "total"
        return phase_deadline, phase

    async def _via_httpx(self) -> bytes | None:
        """The next piece of the body through httpx's iterators (``None`` at the end)."""
        if self._chunks is None:
            # httpx types it as an iterator; it is an async generator
            self._chunks = typing.cast(AsyncGenerator[bytes, None], self._response.aiter_raw())
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def _read(self) -> None:
        if self._read_body is None:
            self._read_body = direct_reader(self._response) or self._via_httpx
        deadline, phase = self._deadline()
        chunk: bytes | None = None
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                chunk = await self._read_body()
            except (httpx.HTTPError, BrokenBody) as exc:
                raise UpstreamProtocolError(
                    f"LLM connection broke mid-stream: {exc or type(exc).__name__}"
                ) from exc
        if scope.cancelled_caught:
            if self._assembler.done:  # the answer is whole; the server just lingers
                self._finished = True
                return
            limit = {
                "ttft": self._timeouts.ttft_s,
                "gap": self._timeouts.gap_s,
                "total": self._timeouts.total_s,
            }[phase]
            raise UpstreamTimeout(f"LLM {phase} timeout after {limit:g} s", phase=phase)
        if self._assembler.done:  # after [DONE]: read to the end so the connection is reused
            self._finished = chunk is None
            return
        if chunk is None:
            events = self._assembler.feed(self._decoder.close())
            self._finished = True
        else:
            events = self._assembler.feed(self._decoder.feed(chunk))
        if events:
            self._last_output = trio.current_time()
            self._pending.extend(events)
        if self._assembler.done or chunk is None:
            self.completion = self._assembler.finish()
            self._pending.append(self.completion)

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


@attrs.define(eq=False)
class _Shard:
    """One httpx client (one connection pool) and the calls it carries now."""

    http: httpx.AsyncClient
    active: int = 0


@attrs.define
class LLMClient:
    """Calls one OpenAI-compatible endpoint. Make it with :func:`open_llm_client`."""

    base_url: str
    model: str
    timeouts: LLMTimeouts
    _shards: list[_Shard]

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMStream]:
        """Start a streamed call; the block's events end with a ``Completion``."""
        async with self._call(request, stream=True) as events:
            yield events

    async def complete(self, request: ChatRequest) -> Completion:
        """One call, not streamed: the whole completion."""
        async with self._call(request, stream=False) as events:
            async for event in events:
                if isinstance(event, Completion):
                    return event
        raise UpstreamProtocolError("LLM answer had no completion")  # pragma: no cover

    @asynccontextmanager
    async def _call(self, request: ChatRequest, *, stream: bool) -> AsyncIterator[LLMStream]:
        started = trio.current_time()
        total_deadline = started + self.timeouts.total_s
        # Headers of a streamed answer come with its first token; of a plain one, at the end.
        first_deadline = (
            min(total_deadline, started + self.timeouts.ttft_s) if stream else total_deadline
        )
        body = orjson.dumps(request.to_json(self.model, stream=stream))
        shard = min(self._shards, key=lambda s: s.active)
        http_request = shard.http.build_request("POST", "chat/completions", content=body)
        response = None
        opened: LLMStream | None = None
        shard.active += 1
        try:
            with trio.CancelScope(deadline=first_deadline) as scope:
                response = await self._send(shard.http, http_request)
                if response.status_code >= 400:
                    await self._raise_for_status(response)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" in content_type:
                    events = opened = LLMStream(response, self.timeouts, started, total_deadline)
                elif "json" in content_type:
                    events = LLMStream.of_completion(
                        response, self.timeouts, await self._read(response)
                    )
                else:
                    raise UpstreamProtocolError(
                        f"LLM answered with content-type {content_type!r}, not an event stream"
                    )
            if scope.cancelled_caught:
                phase = "ttft" if first_deadline < total_deadline else "total"
                limit = self.timeouts.ttft_s if phase == "ttft" else self.timeouts.total_s
                raise UpstreamTimeout(f"LLM {phase} timeout after {limit:g} s", phase=phase)
            yield events
        finally:
            shard.active -= 1
            if response is not None:
                with trio.move_on_after(_CLOSE_TIMEOUT_S) as cleanup:
                    cleanup.shield = True
                    if opened is not None:
                        await opened.aclose()
                    await response.aclose()

    async def _send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        try:
            return await http.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            raise UpstreamTimeout(
                f"LLM connect timeout after {self.timeouts.connect_s:g} s", phase="connect"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"LLM timed out: {type(exc).__name__}", phase="ttft") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"cannot reach the LLM at {self.base_url}: {exc or type(exc).__name__}"
            ) from exc

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > _BODY_LIMIT:
                    raise UpstreamProtocolError("LLM answer is too large")
            return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise UpstreamProtocolError(f"LLM connection broke: {exc}") from exc

    async def _raise_for_status(self, response: httpx.Response) -> None:
        try:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status alone is still worth reporting
        text = body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
        status = response.status_code
        message = f"LLM answered HTTP {status}: {_error_message(body)}"
        if status in (429, 503):
            raise UpstreamRefused(
                message,
                status=status,
                body=text,
                retry_after_ms=_retry_after_ms(response.headers.get("retry-after")),
            )
        raise UpstreamHTTPError(message, status=status, body=text)


@asynccontextmanager
async def open_llm_client(
    settings: LLMSettings,
    *,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[LLMClient]:
    """An :class:`LLMClient` for ``base_url`` (default ``settings.url``), closed on exit."""
    url = base_url or settings.url
    if not url:
        raise UpstreamUnavailable("no LLM URL configured")
    headers: Mapping[str, str] = {
        "content-type": "application/json",
        "accept": "text/event-stream",
        **({"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}),
        **settings.extra_headers,
    }
    timeouts = settings.timeouts
    # httpcore's pool does O(connections²) work on every request it assigns
    # (1.0.9: a list of every connection per idle one, and a readability poll
    # per connection), which measured ~6 ms of CPU per call at 200 pooled
    # connections. Small pools, with calls sent to the least busy, keep that
    # cost flat however many streams are open.
    shard_count = 1 if transport is not None else -(-settings.max_connections // _SHARD_SIZE)
    per_shard = min(settings.max_connections, _SHARD_SIZE)
    # One TLS context for all shards: each makes its own otherwise (~1 MB, ~20 ms).
    tls = ssl.create_default_context(cafile=certifi.where())
    async with contextlib.AsyncExitStack() as stack:
        shards = [
            _Shard(
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=url.rstrip("/") + "/",
                        headers=headers,
                        # Reads are bounded by our own per-phase deadlines on trio's clock.
                        timeout=httpx.Timeout(
                            connect=timeouts.connect_s,
                            read=None,
                            write=timeouts.connect_s,
                            pool=None,
                        ),
                        limits=httpx.Limits(
                            max_connections=per_shard, max_keepalive_connections=per_shard
                        ),
                        transport=transport,
                        verify=tls,
                    )
                )
            )
            for _ in range(shard_count)
        ]
        yield LLMClient(url, settings.model, timeouts, shards)
