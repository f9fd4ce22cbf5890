"""``POST /v1/chat``: the same pipeline over HTTP (protocol.md §2).

With ``Accept: text/event-stream`` the request's events stream as SSE; the
request runs in the app's nursery under its own cancel scope, and the
response body only reads a channel, so no nursery or cancel scope ever spans
a ``yield`` of the body generator. When the client goes away, quart cancels
the body and its ``finally`` cancels the request. Otherwise the request runs
inside the handler and one JSON object answers it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import attrs
import orjson
import trio
from quart import Response, request
from quart_trio import QuartTrio

from chatd.exceptions import ChatdError, TooLarge, Unauthorized
from chatd.pipeline import ChatInput, Event, Pipeline, encode
from chatd.pipeline.events import Done, Error, Token, error_event
from chatd.server.auth import identify
from chatd.server.frames import chat_fields, json_object

__all__ = ["HTTP_STATUS", "register_http_chat"]

HTTP_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "too_large": 413,
    "rate_limited": 429,
    "overloaded": 503,
    "upstream_unavailable": 503,
    "shutting_down": 503,
    "upstream_error": 502,
    "timeout": 504,
    "internal": 500,
}
"""The HTTP status for each protocol error code."""


def _error_response(error: Error) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    headers = {}
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
        headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return Response(
        orjson.dumps({"error": body}),
        status=HTTP_STATUS.get(error.code, 500),
        content_type="application/json",
        headers=headers,
    )


@attrs.define
class _ChannelOutput:
    """Events into a channel read by the SSE body; a gone reader cancels the request."""

    id: str
    channel: trio.MemorySendChannel[tuple[str, Event]]
    scope: trio.CancelScope

    async def send(self, event: Event) -> None:
        try:
            await self.channel.send((self.id, event))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.scope.cancel()  # the client left: end the request as cancelled
            await trio.lowlevel.checkpoint()

    def send_nowait(self, event: Event) -> None:
        gone = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
        with contextlib.suppress(*gone):
            self.channel.send_nowait((self.id, event))


@attrs.define
class _Collector:
    """Events gathered for one JSON answer."""

    tokens: list[str] = attrs.field(factory=list)
    terminal: Done | Error | None = None

    async def send(self, event: Event) -> None:
        if isinstance(event, Token):
            self.tokens.append(event.text)
        elif isinstance(event, Done | Error):
            self.terminal = event
        await trio.lowlevel.checkpoint()

    def send_nowait(self, event: Event) -> None:
        pass


async def _read_chat(pipeline: Pipeline) -> ChatInput:
    """The request body as a :class:`ChatInput`, or a client error."""
    settings = pipeline.settings
    client, ok = identify(
        settings.server.api_keys,
        request.headers.get("Authorization"),
        request.args.get("api_key"),
        request.remote_addr or "unknown",
    )
    if not ok:
        raise Unauthorized("missing or wrong API key")
    limit = settings.limits.max_frame_bytes
    if (request.content_length or 0) > limit:
        raise TooLarge(f"body is {request.content_length} bytes; the limit is {limit}")
    data = json_object(await request.get_data(cache=False), "body", limit)
    message, session, metadata = chat_fields(data)
    return ChatInput("http_" + secrets.token_hex(6), message, session, metadata, client)


def register_http_chat(app: QuartTrio, pipeline: Pipeline) -> None:
    """Add ``POST /v1/chat`` to ``app``."""

    @app.post("/v1/chat")
    async def http_chat() -> Response:
        try:
            chat = await _read_chat(pipeline)
        except ChatdError as exc:
            return _error_response(error_event(exc))
        if "text/event-stream" in request.headers.get("Accept", ""):
            return _stream(app, pipeline, chat)
        collector = _Collector()
        await pipeline.run(chat, collector, trio.CancelScope())
        terminal = collector.terminal
        if isinstance(terminal, Error) or terminal is None:
            return _error_response(terminal or Error("internal", "no answer"))
        answer = {
            "answer": "".join(collector.tokens),
            "path": terminal.path,
            "request_id": terminal.request_id,
            "finish_reason": terminal.finish_reason,
            "shared": terminal.shared,
            "cached": terminal.cached,
            "usage": terminal.usage,
            "timings": terminal.timings,
        }
        return Response(orjson.dumps(answer), content_type="application/json")


def _stream(app: QuartTrio, pipeline: Pipeline, chat: ChatInput) -> Response:
    send, receive = trio.open_memory_channel[tuple[str, Event]](pipeline.settings.server.send_queue)
    scope = trio.CancelScope()

    async def run() -> None:
        async with send:
            await pipeline.run(chat, _ChannelOutput(chat.id, send, scope), scope)

    app.nursery.start_soon(run)

    async def body() -> AsyncIterator[bytes]:
        try:
            async with receive:
                async for request_id, event in receive:
                    yield b"event: %s\ndata: %s\n\n" % (
                        event.type.encode(),
                        encode(event, request_id),
                    )
        finally:
            scope.cancel()

    response = Response(body(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response
