"""``POST /v1/chat``: the same pipeline over HTTP (protocol.md §2).

With ``Accept: text/event-stream`` the request's events stream as SSE, served
at the ASGI level (:func:`with_sse_chat`, around the quart app) so the
request owns its work: one nursery, inside the ASGI call hypercorn made for
this request, holds the pipeline, the writer and a watcher for the client's
disconnect. A disconnect, a crash or the deadline ends exactly that
request's work, nothing else's. The body is read up to the size limit and no
further. Otherwise quart runs the request inside its handler and one JSON
object answers it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from chatd.exceptions import ChatdError, ClientError, NotFound, TooLarge, Unauthorized
from chatd.pipeline import ChatInput, Event, Pipeline, encode
from chatd.pipeline.events import Done, Error, Token, error_event
from chatd.pipeline.resume import Journal
from chatd.server.auth import client_address, identify
from chatd.server.frames import chat_fields, json_object

__all__ = ["HTTP_STATUS", "log_refusal", "register_http_chat", "with_sse_chat"]

log = structlog.get_logger("chatd.server")

HTTP_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
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


def _error_parts(error: Error) -> tuple[int, bytes, dict[str, str]]:
    """An error's HTTP status, JSON body and headers."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    headers = {"Content-Type": "application/json"}
    if error.request_id is not None:
        body["request_id"] = error.request_id
        headers["X-Request-Id"] = error.request_id
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
        headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return HTTP_STATUS.get(error.code, 500), orjson.dumps({"error": body}), headers


def _error_response(error: Error) -> Response:
    status, body, headers = _error_parts(error)
    return Response(body, status=status, headers=headers)


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


def _check_client(
    pipeline: Pipeline,
    authorization: str | None,
    api_key: str | None,
    peer: str,
    forwarded_for: str | None,
) -> str:
    """Who is asking, or :class:`Unauthorized`."""
    server = pipeline.settings.server
    remote = client_address(peer, forwarded_for, server.trusted_proxies)
    client, ok = identify(server.api_keys, authorization, api_key, remote)
    if not ok:
        raise Unauthorized("missing or wrong API key")
    return client


def _check_length(pipeline: Pipeline, length: int) -> None:
    limit = pipeline.settings.limits.max_frame_bytes
    if length > limit:
        raise TooLarge(f"body is {length} bytes; the limit is {limit}")


def _chat_input(pipeline: Pipeline, body: str | bytes, client: str) -> tuple[ChatInput, bool]:
    """The chat, and whether it asks to be resumable."""
    data = json_object(body, "body", pipeline.settings.limits.max_frame_bytes)
    message, session, metadata = chat_fields(data)
    resumable = data.get("resumable", False)
    if not isinstance(resumable, bool):
        raise ClientError("'resumable' must be true or false")
    request_id = "http_" + secrets.token_hex(6)
    chat = ChatInput(request_id, message, session, metadata, client, scope=request_id)
    return chat, resumable


async def _read_chat(pipeline: Pipeline) -> ChatInput:
    """The request body as a :class:`ChatInput`, or a client error."""
    client = _check_client(
        pipeline,
        request.headers.get("Authorization"),
        request.args.get("api_key"),
        request.remote_addr or "unknown",
        request.headers.get("X-Forwarded-For"),
    )
    _check_length(pipeline, request.content_length or 0)
    body = bytearray()
    async for chunk in request.body:  # refused as soon as it passes the limit
        body += chunk
        _check_length(pipeline, len(body))
    return _chat_input(pipeline, bytes(body), client)[0]


def register_http_chat(app: QuartTrio, pipeline: Pipeline) -> None:
    """Add ``POST /v1/chat`` (JSON answers) to ``app``; :func:`with_sse_chat`
    serves its SSE requests before they reach the app."""

    @app.post("/v1/chat")
    async def http_chat() -> Response:
        try:
            chat = await _read_chat(pipeline)
        except ChatdError as exc:
            log_refusal(exc, "/v1/chat")
            return _error_response(error_event(exc))
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


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]
"""An ASGI 3 application: ``app(scope, receive, send)``."""


def with_sse_chat(app: ASGIApp, pipeline: Pipeline) -> ASGIApp:
    """``app``, with ``POST /v1/chat`` asking for ``text/event-stream`` served
    here, each request owning its work (see the module docstring)."""

    async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/v1/chat"
            and scope["method"] == "POST"
            and b"text/event-stream" in header(scope, b"accept")
        ):
            await _serve_sse(pipeline, scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/v1/chat/events":
            await _serve_resume(pipeline, scope, receive, send)
        else:
            await app(scope, receive, send)

    return asgi


def header(scope: dict[str, Any], name: bytes) -> bytes:
    """The first value of header ``name`` (lower case), or ``b""``."""
    return next((v for k, v in scope["headers"] if k.lower() == name), b"")


async def read_request(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive
) -> tuple[str, bytes] | None:
    """Who asks and the body (``None``: the client left), or a client error;
    the body is read up to the limit, never past it."""
    authorization = header(scope, b"authorization").decode("latin1") or None
    query = parse_qsl(scope["query_string"].decode("latin1"), keep_blank_values=True)
    remote = (scope.get("client") or ("unknown",))[0]
    forwarded_for = header(scope, b"x-forwarded-for").decode("latin1") or None
    api_key = next((v for k, v in query if k == "api_key"), None)
    client = _check_client(pipeline, authorization, api_key, remote, forwarded_for)
    length = header(scope, b"content-length")
    if length.isdigit():
        _check_length(pipeline, int(length))
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        _check_length(pipeline, len(body))
        if not message.get("more_body", False):
            break
    return client, bytes(body)


async def _read_sse_chat(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive
) -> tuple[ChatInput, bool] | None:
    """The request as a :class:`ChatInput` and whether it is resumable
    (``None``: the client left), or a client error."""
    read = await read_request(pipeline, scope, receive)
    return None if read is None else _chat_input(pipeline, read[1], read[0])


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def crash_error(chat: ChatInput) -> Error:
    """What the client of a request that crashed is told."""
    return Error("internal", "internal error; the log has it under " + chat.id)


async def run_owned(
    pipeline: Pipeline,
    chat: ChatInput,
    receive: Receive,
    deliver: Callable[[str, Event], Awaitable[None]],
) -> None:
    """Run ``chat`` in a nursery owned by this HTTP request, handing each of
    its events to ``deliver``: the client leaving (``http.disconnect``, once
    the body is read) cancels it, and nothing outlives the call."""
    events, events_out = trio.open_memory_channel[tuple[str, Event]](
        pipeline.settings.server.send_queue
    )
    cancel = trio.CancelScope()  # the client's: nothing cancels it but its leaving
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            async with events:
                await pipeline.run(chat, _ChannelOutput(chat.id, events, cancel), cancel)

        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()  # the client left: its request ends now

        nursery.start_soon(run)
        nursery.start_soon(watch_for_disconnect)
        async with events_out:
            async for request_id, event in events_out:
                await deliver(request_id, event)
        nursery.cancel_scope.cancel()  # answered: stop watching


def log_refusal(exc: ChatdError, where: str) -> None:
    """One line for a request refused before it began (it has no request id)."""
    log.info("request refused", code=exc.code, error=exc.message, where=where)


async def _send_error(send: Send, exc: ChatdError) -> None:
    log_refusal(exc, "/v1/chat")
    status, body, headers = _error_parts(error_event(exc))
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _serve_resumable(
    pipeline: Pipeline, chat: ChatInput, receive: Receive, send: Send
) -> None:
    """A resumable SSE chat: its events go to a journal, relayed here with
    ``id: REQUEST_ID:SEQ`` lines; when the client leaves, the request waits
    the grace for ``GET /v1/chat/events`` (Last-Event-ID) to resume it."""
    scope = trio.CancelScope()
    journal = Journal(
        chat.client, scope, pipeline.settings.server.resume_grace_s, pipeline.journals
    )
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            try:
                await pipeline.run(chat, journal, scope)
            except Exception as exc:  # this request's fault: it ends here
                log.error("request crashed", http_request=chat.id, exc_info=exc)
                journal.send_nowait(crash_error(chat))

        nursery.start_soon(run)
        nursery.start_soon(journal.keep)
        await _relay(journal, 0, chat.id, receive, send)


async def _relay(journal: Journal, after: int, label: str, receive: Receive, send: Send) -> None:
    """``journal``'s events after ``after`` as SSE, until its end or the client leaves."""
    async with trio.open_nursery() as nursery:

        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()  # the client left: the journal waits for it

        nursery.start_soon(watch_for_disconnect)
        async with contextlib.aclosing(journal.follow(after)) as events:
            async for seq, event in events:
                frame = b"id: %s:%d\nevent: %s\ndata: %s\n\n" % (
                    str(journal.request_id).encode(),
                    seq,
                    event.type.encode(),
                    encode(event, label, seq),
                )
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


async def _serve_resume(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """``GET /v1/chat/events`` with ``Last-Event-ID: REQUEST_ID:SEQ``: the rest
    of a resumable SSE chat (or a WebSocket one), from after that event."""
    try:
        read = await read_request(pipeline, scope, receive)
        if read is None:
            return
        last = header(scope, b"last-event-id").decode("latin1")
        request_id, _, seq = last.rpartition(":")
        if not request_id or not seq.isdigit():
            raise ClientError("'Last-Event-ID' must be REQUEST_ID:SEQ, as the stream's ids are")
        journal = pipeline.journals.find(request_id, read[0])
        if journal is None:
            raise NotFound(f"no request {request_id!r} to resume")
    except ChatdError as exc:
        await _send_error(send, exc)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    await _relay(journal, int(seq), request_id, receive, send)


async def _serve_sse(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """One SSE request, start to end, in a nursery of its own."""
    try:
        read = await _read_sse_chat(pipeline, scope, receive)
    except ChatdError as exc:
        await _send_error(send, exc)
        return
    if read is None:
        return
    chat, resumable = read
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    if resumable and pipeline.settings.server.resume_grace_s > 0:
        await _serve_resumable(pipeline, chat, receive, send)
        return

    async def deliver(request_id: str, event: Event) -> None:
        frame = b"event: %s\ndata: %s\n\n" % (event.type.encode(), encode(event, request_id))
        await send({"type": "http.response.body", "body": frame, "more_body": True})

    try:
        await run_owned(pipeline, chat, receive, deliver)
    except Exception as exc:  # this request's fault: it ends here, nothing else does
        log.error("request crashed", http_request=chat.id, exc_info=exc)
        frame = b"event: error\ndata: %s\n\n" % encode(crash_error(chat), chat.id)
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
