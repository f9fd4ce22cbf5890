"""OpenAI's Chat Completions in front of chatd's pipeline (docs/protocol.md §6).

``POST /v1/chat/completions`` runs a chat the way ``/v1/ws`` does (router,
tools on the server, Path A and B, flights, cache, limits) and answers in
OpenAI's shape, so its SDKs and the tools built on them can talk to chatd;
``GET /v1/models`` names the one model, :data:`MODEL`. The conversation is
``messages``: the last must be the user's, and the user and assistant turns
before it are the history (system messages are dropped: chatd has its own
prompt; tool turns are refused, as tools run on the server). A session
(``X-Chatd-Session``, else ``user``) stores the turn, and stands in for the
history when ``messages`` holds one message.

What chatd adds goes in a ``chatd`` member that OpenAI's clients ignore:
the route, each tool's start and end, queue positions (each a chunk with an
empty delta), and the request id, path, timings and flags of the answer.

Like SSE chats, each request runs in a nursery of its own inside its ASGI
call (:func:`chatd.server.http_chat.run_owned`): a client that closes the
stream cancels the request and its upstream calls. A streamed request waits
for its first event before it answers, so a refusal (rate limit, overload,
a draining server) is an HTTP status the SDKs raise as their own exception
classes; an error after that is a ``data: {"error": ...}`` line.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import orjson
import structlog

from chatd.exceptions import HTTP_STATUS, ChatdError, ClientError
from chatd.llm import Message
from chatd.pipeline import ChatInput, Event, Pipeline
from chatd.pipeline.events import (
    Accepted,
    Done,
    Error,
    Queued,
    Route,
    Token,
    ToolEnd,
    ToolStart,
    error_event,
    wire_object,
)
from chatd.server.asgi import (
    SSE_HEADERS,
    ASGIApp,
    Receive,
    Send,
    crash_error,
    header,
    log_refusal,
    read_request,
    retry_after_s,
    run_owned,
)
from chatd.server.frames import json_object

__all__ = ["MODEL", "with_openai_api"]

log = structlog.get_logger("chatd.server")

MODEL = "chatd"
"""The model clients name: chatd's pipeline, whatever LLM it runs on."""
CREATED = 1_767_225_600
"""``created`` of :data:`MODEL` (2026-01-01)."""

_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
"""OpenAI's ``type`` by status; otherwise invalid_request_error (4xx), server_error."""
_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


class InvalidRequest(ClientError):
    """A request OpenAI's shape does not allow, naming the field (``param``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(InvalidRequest):
    """A ``model`` other than :data:`MODEL` (404, as OpenAI answers)."""


def with_openai_api(app: ASGIApp, pipeline: Pipeline) -> ASGIApp:
    """``app``, with ``POST /v1/chat/completions`` and ``GET /v1/models`` served here."""

    routes = {
        ("POST", "/v1/chat/completions"): _serve_completion,
        ("GET", "/v1/models"): _serve_models,
    }

    async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        route = routes.get((scope.get("method", ""), scope.get("path", "")))
        if scope["type"] == "http" and route is not None:
            await route(pipeline, scope, receive, send)
            return
        await app(scope, receive, send)

    return asgi


# --- reading a request ---------------------------------------------------------------------


@attrs.frozen
class Completion:
    """A ``/v1/chat/completions`` request as chatd runs it."""

    chat: ChatInput
    stream: bool
    include_usage: bool


T = TypeVar("T")


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise InvalidRequest(f"{where}: only text content is supported", "messages")
        return "".join(p["text"] for p in content)
    raise InvalidRequest(f"{where}.content must be a string or a list of text parts", "messages")


def _conversation(messages: Any) -> tuple[str, tuple[Message, ...]]:
    """The user's last message and the turns before it."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    turns: list[Message] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidRequest(f"{where} must be an object", "messages")
        role = message.get("role")
        if role in ("system", "developer"):
            continue  # chatd's own system prompt frames every answer
        if role in ("tool", "function") or message.get("tool_calls"):
            raise InvalidRequest(
                f"{where}: tools run on the server; send the conversation's text only",
                "messages",
            )
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{where}.role must be user, assistant or system", "messages")
        turns.append({"role": role, "content": _text(message.get("content"), where)})
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"]:
        raise InvalidRequest("the last message must be the user's, and not empty", "messages")
    return turns[-1]["content"], tuple(turns[:-1])


def _member(data: Mapping[str, Any], name: str, kind: type[T], what: str, default: T) -> T:
    """``data[name]``, ``default`` if absent or null; InvalidRequest unless a ``kind``."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f"'{name}' must be {what}", name)
    return value


def parse_completion(
    body: bytes, client: str, request_id: str, session: str | None, limit: int
) -> Completion:
    """``body`` as a :class:`Completion`, or :class:`InvalidRequest` naming the field."""
    data = json_object(body, "body", limit)
    model = data.get("model")
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", "model")
    if model != MODEL:
        raise ModelNotFound(f"the model {model!r} does not exist; use {MODEL!r}", "model")
    stream = _member(data, "stream", bool, "a boolean", False)
    options = _member(data, "stream_options", dict, "an object", {})
    if data.get("tools") or data.get("functions"):
        raise InvalidRequest("chatd runs its own tools; 'tools' are not accepted", "tools")
    if data.get("n", 1) != 1:
        raise InvalidRequest("'n' must be 1", "n")
    metadata = _member(data, "metadata", dict, "an object", {})
    user = data.get("user")
    if session is None and isinstance(user, str) and user:
        session = user
    message, history = _conversation(data.get("messages"))
    chat = ChatInput(
        request_id, message, session, dict(metadata), client, scope=request_id, history=history
    )
    return Completion(chat, stream, bool(options.get("include_usage", False)))


# --- answering -------------------------------------------------------------------------------


def error_body(
    error: Error, param: str | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An error's status, OpenAI-shaped body and headers (``Retry-After`` when known)."""
    status = 404 if error.code == "model_not_found" else HTTP_STATUS.get(error.code, 500)
    body = {
        "error": {
            "message": error.message,
            "type": _ERROR_TYPES.get(
                status, "invalid_request_error" if status < 500 else "server_error"
            ),
            "param": param,
            "code": error.code,
        }
    }
    headers = [(b"content-type", b"application/json")]
    if error.request_id is not None:  # as OpenAI names its own
        headers.append((b"x-request-id", error.request_id.encode()))
    if error.retry_after_ms is not None:
        headers.append((b"retry-after", str(retry_after_s(error.retry_after_ms)).encode()))
        headers.append((b"retry-after-ms", str(error.retry_after_ms).encode()))
    return status, orjson.dumps(body), headers


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, error: Error, param: str | None = None) -> None:
    await _respond(send, *error_body(error, param))


def _client_error(exc: ChatdError) -> tuple[Error, str | None]:
    """A refusal before the chat starts (logged), and the field it names."""
    log_refusal(exc, "/v1/chat/completions")
    code = "model_not_found" if isinstance(exc, ModelNotFound) else exc.code
    event = error_event(exc)
    param = exc.param if isinstance(exc, InvalidRequest) else None
    return Error(code, event.message, event.retry_after_ms), param


async def _serve_models(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    try:
        await read_request(pipeline, scope, receive)
    except ChatdError as exc:
        await _refuse(send, *_client_error(exc))
        return
    model = {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "chatd"}
    body = orjson.dumps({"object": "list", "data": [model]})
    await _respond(send, 200, body, [(b"content-type", b"application/json")])


def _usage(done: Done) -> dict[str, int]:
    prompt, completion = done.usage["prompt_tokens"], done.usage["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


_EXTENDED = (Route, ToolStart, ToolEnd, Queued, Done)
"""The events that go in the ``chatd`` member, shaped as on the WebSocket."""


def _extension(event: Event) -> dict[str, Any] | None:
    """What an event adds in the ``chatd`` member (``None``: nothing)."""
    return wire_object(event) if isinstance(event, _EXTENDED) else None


@attrs.define
class _Answer:
    """One completion's state while its events arrive."""

    send: Send
    completion: Completion
    created: int = attrs.field(factory=lambda: int(time.time()))
    id: str = ""
    started: bool = False
    text: list[str] = attrs.field(factory=list)
    activity: list[dict[str, Any]] = attrs.field(factory=list)
    terminal: Done | Error | None = None

    def chunk(self, delta: Mapping[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return self.line(choices=[choice], **extra)

    def line(self, **fields: Any) -> bytes:
        """One ``data:`` line of a ``chat.completion.chunk`` with ``fields``."""
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL,
            **fields,
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def deliver(self, request_id: str, event: Event) -> None:
        if isinstance(event, Accepted):
            self.id = "chatcmpl-" + event.request_id
            if self.completion.stream:
                await self.send(
                    {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
                )
                self.started = True
                await self.write(self.chunk({"role": "assistant", "content": ""}))
            return
        if isinstance(event, Done | Error):
            self.terminal = event
            if self.started:
                await self.finish_stream(event)
            return
        if isinstance(event, Token):
            if self.completion.stream:
                await self.write(self.chunk({"content": event.text}))
            else:
                self.text.append(event.text)
            return
        extension = _extension(event)
        if extension is None:
            return
        if self.completion.stream:
            await self.write(self.chunk({}, chatd=extension))
        else:
            self.activity.append(extension)

    async def finish_stream(self, event: Done | Error) -> None:
        if isinstance(event, Error):
            await self.write(b"data: " + error_body(event)[1] + b"\n\n")
            return
        await self.write(self.chunk({}, _FINISH[event.finish_reason], chatd=_extension(event)))
        if self.completion.include_usage:
            await self.write(self.line(choices=[], usage=_usage(event)))
        await self.write(b"data: [DONE]\n\n")

    def whole(self, done: Done) -> bytes:
        """The non-streamed answer."""
        extension = _extension(done)
        assert extension is not None
        extension["events"] = self.activity
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(self.text)},
                        "finish_reason": _FINISH[done.finish_reason],
                    }
                ],
                "usage": _usage(done),
                "chatd": extension,
            }
        )


async def _serve_completion(
    pipeline: Pipeline, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """One completion, start to end, in a nursery of its own."""
    request_id = "http_" + secrets.token_hex(6)
    try:
        read = await read_request(pipeline, scope, receive)
        if read is None:
            return
        client, body = read
        session = header(scope, b"x-chatd-session").decode("latin1") or None
        completion = parse_completion(
            body, client, request_id, session, pipeline.settings.limits.max_frame_bytes
        )
    except ChatdError as exc:
        await _refuse(send, *_client_error(exc))
        return
    answer = _Answer(send, completion)
    try:
        await run_owned(pipeline, completion.chat, receive, answer.deliver)
    except Exception as exc:  # this request's fault: it ends here, nothing else does
        log.error("request crashed", http_request=request_id, exc_info=exc)
        answer.terminal = crash_error(completion.chat)
        if answer.started:
            await answer.finish_stream(answer.terminal)
    terminal = answer.terminal
    if answer.started:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif isinstance(terminal, Done):
        await _respond(send, 200, answer.whole(terminal), [(b"content-type", b"application/json")])
    elif terminal is not None:
        await _refuse(send, terminal)
    # No terminal event: the client left, and hears nothing.
