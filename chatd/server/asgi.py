"""What chatd's own HTTP endpoints share, at the ASGI level: the status of
each error code, reading who asks and a body up to the limit (never past
it), and :func:`run_owned`, which runs a chat in a nursery owned by its HTTP
request so that the client leaving, a crash or the deadline ends exactly
that request's work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson
import structlog
import trio

from chatd.exceptions import HTTP_STATUS, ChatdError, TooLarge, Unauthorized, crash_message
from chatd.pipeline import ChatInput, Event, Pipeline
from chatd.pipeline.events import Error
from chatd.server.auth import client_address, identify
from chatd.server.origins import ASGIApp, Receive, Send

__all__ = [
    "SSE_HEADERS",
    "ASGIApp",
    "ChannelOutput",
    "Receive",
    "Send",
    "cancel_on_disconnect",
    "check_client",
    "check_length",
    "crash_error",
    "error_parts",
    "header",
    "log_refusal",
    "read_request",
    "retry_after_s",
    "run_owned",
]

log = structlog.get_logger("chatd.server")


def error_parts(error: Error) -> tuple[int, bytes, dict[str, str]]:
    """An error's HTTP status, JSON body and headers."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    headers = {"Content-Type": "application/json"}
    if error.request_id is not None:
        body["request_id"] = error.request_id
        headers["X-Request-Id"] = error.request_id
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
        headers["Retry-After"] = str(retry_after_s(error.retry_after_ms))
    return HTTP_STATUS.get(error.code, 500), orjson.dumps({"error": body}), headers


@attrs.define
class ChannelOutput:
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

    def try_send(self, event: Event) -> bool:
        return False  # every event goes through send, which sees the reader gone


def check_client(
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


def check_length(pipeline: Pipeline, length: int) -> None:
    limit = pipeline.settings.limits.max_frame_bytes
    if length > limit:
        raise TooLarge(f"body is {length} bytes; the limit is {limit}")


def retry_after_s(retry_after_ms: int) -> int:
    """A retry hint as ``Retry-After`` says it: whole seconds, at least one."""
    return max(1, -(-retry_after_ms // 1000))


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
    client = check_client(pipeline, authorization, api_key, remote, forwarded_for)
    length = header(scope, b"content-length")
    if length.isdigit():
        check_length(pipeline, int(length))
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        check_length(pipeline, len(body))
        if not message.get("more_body", False):
            break
    return client, bytes(body)


SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` once the HTTP client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def crash_error(chat: ChatInput) -> Error:
    """What the client of a request that crashed is told."""
    return Error("internal", crash_message(chat.id))


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
                await pipeline.run(chat, ChannelOutput(chat.id, events, cancel), cancel)

        nursery.start_soon(run)
        # The client left: its request ends now.
        nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
        async with events_out:
            async for request_id, event in events_out:
                await deliver(request_id, event)
        nursery.cancel_scope.cancel()  # answered: stop watching


def log_refusal(exc: ChatdError, where: str) -> None:
    """One line for a request refused before it began (it has no request id)."""
    log.info("request refused", code=exc.code, error=exc.message, where=where)
