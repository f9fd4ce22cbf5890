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
from typing import Any

import attrs
import orjson
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from chatd.exceptions import ChatdError, ClientError, NotFound
from chatd.pipeline import ChatInput, Event, Pipeline, encode
from chatd.pipeline.events import Done, Error, Token, error_event
from chatd.pipeline.resume import Journal
from chatd.server.asgi import (
    SSE_HEADERS,
    ASGIApp,
    Receive,
    Send,
    cancel_on_disconnect,
    check_client,
    check_length,
    crash_error,
    error_parts,
    header,
    log_refusal,
    read_request,
    run_owned,
)
from chatd.server.frames import chat_fields, json_object

__all__ = ["register_http_chat", "with_sse_chat"]

log = structlog.get_logger("chatd.server")


def _error_response(error: Error) -> Response:
    status, body, headers = error_parts(error)
    return Response(body, status=status, headers=headers)


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

    def try_send(self, event: Event) -> bool:
        return False  # every event goes through send


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
    client = check_client(
        pipeline,
        request.headers.get("Authorization"),
        request.args.get("api_key"),
        request.remote_addr or "unknown",
        request.headers.get("X-Forwarded-For"),
    )
    check_length(pipeline, request.content_length or 0)
    body = bytearray()
    async for chunk in request.body:  # refused as soon as it passes the limit
        body += chunk
        check_length(pipeline, len(body))
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


async def _read_sse_chat(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive
) -> tuple[ChatInput, bool] | None:
    """The request as a :class:`ChatInput` and whether it is resumable
    (``None``: the client left), or a client error."""
    read = await read_request(pipeline, scope, receive)
    return None if read is None else _chat_input(pipeline, read[1], read[0])


async def _send_error(send: Send, exc: ChatdError) -> None:
    log_refusal(exc, "/v1/chat")
    status, body, headers = error_parts(error_event(exc))
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
        # The client left: the journal waits for it.
        nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
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
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
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
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
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
