"""Answering one ``POST /v1/chat/completions``: parsing, faults, pacing, the wire.

Pacing is by due time. Paced unit ``k`` (a content token, a tool-call head or
a piece of a tool call's arguments) is due at ``t0 + k / tokens_per_s``,
where ``t0`` is the request's arrival plus ``ttft_ms``. At each wakeup every
unit already due goes out in one write, then the task sleeps until the next
one is due. A stream costs one wakeup and one write per unit when the
scheduler keeps up, and fewer, larger writes when it falls behind, instead
of a backlog of writes that would make it fall further behind. Sleeps go
through the server's :class:`~chatd.llm.sim.pacing.Pacer`, so wakeups land
on 1 ms ticks.

Streams send their response head at once and the first chunk (the role,
with the first token or tool-call head) at ``t0``, so a client's
time-to-first-token timeout is what trips on a slow first token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import attrs
import orjson
import trio

from chatd.llm.sim import wire
from chatd.llm.sim.http import Exchange
from chatd.llm.sim.pacing import TOLERANCE_S, Pacer
from chatd.llm.sim.rules import Plan, TextPlan, ToolCall, tokenize
from chatd.llm.types import estimate_prompt_tokens

__all__ = [
    "FAULT_MODES",
    "BadRequest",
    "CompletionRequest",
    "Fault",
    "FaultMode",
    "Timing",
    "answer_completion",
    "parse_completion_request",
]

FaultMode = Literal["ok", "error", "hang", "slow", "cut", "garbage"]
FAULT_MODES: tuple[FaultMode, ...] = ("ok", "error", "hang", "slow", "cut", "garbage")
ARGUMENT_PIECE_CHARS = 8
GARBAGE = b"data: {this is not json\n\n"
DEFAULT_MODEL = "chatd-sim"


@attrs.frozen
class Timing:
    """How fast answers come: time to first token, then tokens per second."""

    ttft_ms: float
    tokens_per_s: float


@attrs.frozen
class Fault:
    """The injected fault for completion calls (see the package docstring)."""

    mode: FaultMode = "ok"
    status: int = 500
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    after_tokens: int = 1

    def timing(self, base: Timing) -> Timing:
        """The timing in force under this fault: its own values where it has them."""
        if self.mode == "ok":
            return base
        return Timing(
            base.ttft_ms if self.ttft_ms is None else self.ttft_ms,
            base.tokens_per_s if self.tokens_per_s is None else self.tokens_per_s,
        )


class BadRequest(Exception):
    """A completions request the simulator refuses with 400, as OpenAI would."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@attrs.frozen
class CompletionRequest:
    """The parts of a chat-completions request body the answer depends on."""

    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Parse and check a request body; raise :class:`BadRequest` when OpenAI would."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", "messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("each message must be an object with a role", "messages")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        raise BadRequest("model must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequest("max_tokens must be a positive integer", "max_tokens")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools must be an array", "tools")
    return CompletionRequest(
        body=body,
        model=model,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        max_tokens=max_tokens,
        prompt_tokens=estimate_prompt_tokens(messages),
    )


_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


async def answer_completion(
    exchange: Exchange,
    request: CompletionRequest,
    plan: Plan,
    *,
    timing: Timing,
    fault: Fault,
    arrived: float,
    pacer: Pacer,
) -> bool:
    """Answer one completion request as ``plan`` says, under ``fault``.

    ``arrived`` is the request's arrival on trio's clock. True when a whole
    answer (status 200) was sent; a fault answers with an error (False),
    hangs until cancelled, or drops the connection (:class:`AbortConnection`).
    """
    if fault.mode == "error":
        kind, code = _ERROR_KINDS.get(
            fault.status, ("server_error" if fault.status >= 500 else "invalid_request_error", None)
        )
        message = f"simulated fault: HTTP {fault.status}"
        await exchange.respond(fault.status, wire.error_body(message, kind, code))
        return False
    if fault.mode == "hang":
        await trio.sleep_forever()
    script = _Script.build(request, plan)
    first_due = arrived + timing.ttft_ms / 1000
    interval = 1 / timing.tokens_per_s
    if request.stream:
        await _stream(exchange, request, script, fault, first_due, interval, pacer)
    else:
        await pacer.sleep_until(first_due + (script.units - 1) * interval)
        if fault.mode == "cut":
            exchange.abort()
        if fault.mode == "garbage":
            await exchange.respond(200, GARBAGE[6:-2])
        else:
            await exchange.respond(200, script.body(request))
    return True


@attrs.frozen
class _Script:
    """A plan laid out as paced units, with the counts the answer reports."""

    tokens: Sequence[str]
    calls: Sequence[tuple[ToolCall, str, list[str]]]  # call, call id, argument pieces
    finish_reason: str
    units: int
    completion_tokens: int

    @classmethod
    def build(cls, request: CompletionRequest, plan: Plan) -> _Script:
        if isinstance(plan, TextPlan):
            tokens = tokenize(plan.text)
            finish = "stop"
            if request.max_tokens is not None and len(tokens) > request.max_tokens:
                tokens, finish = tokens[: request.max_tokens], "length"
            return cls(tokens, (), finish, max(1, len(tokens)), len(tokens))
        calls = []
        for call in plan.calls:
            arguments = orjson.dumps(call.arguments).decode()
            pieces = [
                arguments[i : i + ARGUMENT_PIECE_CHARS]
                for i in range(0, len(arguments), ARGUMENT_PIECE_CHARS)
            ]
            calls.append((call, wire.new_tool_call_id(), pieces))
        units = sum(1 + len(pieces) for _, _, pieces in calls)
        return cls((), calls, "tool_calls", units, units)

    def chunks(self, encoder: wire.ChunkEncoder) -> Iterator[bytes]:
        """The SSE event of each paced unit, in order; the first carries the role."""
        if not self.calls:
            content = encoder.content
            tokens = iter(self.tokens)
            first = next(tokens, None)
            yield encoder.first() + (b"" if first is None else content(first))
            for token in tokens:
                yield content(token)
            return
        for index, (call, call_id, pieces) in enumerate(self.calls):
            yield encoder.tool_call_head(index, call_id, call.name, first=index == 0)
            for piece in pieces:
                yield encoder.arguments(index, piece)

    def body(self, request: CompletionRequest) -> bytes:
        """The whole non-streamed response."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.tokens)}
        if self.calls:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(pieces)},
                }
                for call, call_id, pieces in self.calls
            ]
        return wire.completion_body(
            completion_id=wire.new_completion_id(),
            created=int(time.time()),
            model=request.model,
            message=message,
            finish_reason=self.finish_reason,
            usage=wire.usage(request.prompt_tokens, self.completion_tokens),
        )


async def _stream(
    exchange: Exchange,
    request: CompletionRequest,
    script: _Script,
    fault: Fault,
    first_due: float,
    interval: float,
    pacer: Pacer,
) -> None:
    encoder = wire.ChunkEncoder(
        completion_id=wire.new_completion_id(),
        created=int(time.time()),
        model=request.model,
        include_usage=request.include_usage,
    )
    await exchange.start_stream(headers=[(b"cache-control", b"no-cache")])
    chunks = script.chunks(encoder)
    cut = fault.mode == "cut"
    limit = min(script.units, fault.after_tokens) if cut else script.units
    sent = 0
    while True:
        # Due times are always computed by this one expression, and the pacer
        # wakes us at most TOLERANCE_S before one, so waking for a unit
        # guarantees the loop below takes it: no empty wakeups, no spinning.
        now = trio.current_time() + TOLERANCE_S
        if first_due + sent * interval > now:
            await pacer.sleep_until(first_due + sent * interval)
            now = trio.current_time() + TOLERANCE_S
        else:  # behind: still let others run, as the write below never yields
            await trio.lowlevel.checkpoint()
        batch = []
        while sent < limit and first_due + sent * interval <= now:
            batch.append(next(chunks))
            sent += 1
            if sent == 1 and fault.mode == "garbage":
                batch.append(GARBAGE)
        if sent < limit:
            await exchange.send(b"".join(batch))
        elif cut:
            await exchange.send(b"".join(batch))
            exchange.abort()
        else:
            batch.append(encoder.finish(script.finish_reason))
            if request.include_usage:
                batch.append(encoder.usage(request.prompt_tokens, script.completion_tokens))
            batch.append(wire.DONE)
            await exchange.send(b"".join(batch), end=True)
            return
