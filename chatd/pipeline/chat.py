"""One chat request from acceptance to its one terminal event.

:meth:`Pipeline.run` is the whole life of a request: checks (draining, size,
rate limit), ``accepted``, the request deadline, admission, prepare, the
answer, and then exactly one ``done`` or ``error``. It runs inside the
caller's :class:`trio.CancelScope`: cancelling that scope (the client's
``cancel``) ends the request with ``done``/``cancelled``, and every LLM call
and tool inside it stops with it. A cancellation from further out (the
connection closed) propagates, as nobody is left to tell.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import structlog
import trio

from chatd.config import Settings
from chatd.exceptions import ChatdError, DeadlineExceeded, ShuttingDown, TooLarge
from chatd.llm import LLMClient
from chatd.pipeline.admission import Admission
from chatd.pipeline.answer import Turn, answer
from chatd.pipeline.events import Accepted, Done, Error, Event, Queued, error_event
from chatd.pipeline.prepare import build_prompt
from chatd.pipeline.ratelimit import RateLimiter
from chatd.stores.sessions import SessionStore
from chatd.tools.base import ToolContext
from chatd.tools.registry import ToolRegistry

__all__ = ["ChatInput", "Pipeline", "RequestOutput"]

log = structlog.get_logger("chatd.pipeline")


class RequestOutput(Protocol):
    """Where a request's events go (the connection binds the request's id)."""

    async def send(self, event: Event) -> None:
        """Send an event, waiting for room."""
        ...

    def send_nowait(self, event: Event) -> None:
        """Send an advisory event if there is room (queue positions)."""
        ...


@attrs.frozen
class ChatInput:
    """A ``chat`` as the client sent it, plus who sent it."""

    id: str
    message: str
    session: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    client: str = "anonymous"


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@attrs.define
class Pipeline:
    """Everything a request needs, shared by all requests of the process."""

    settings: Settings
    llm: LLMClient
    tools: ToolRegistry
    sessions: SessionStore
    admission: Admission
    rate_limiter: RateLimiter
    draining: bool = False

    def new_request_id(self) -> str:
        """A server-made id, unique enough to find a request in the logs."""
        return "req_" + secrets.token_hex(8)

    def check(self, chat: ChatInput) -> None:
        """Refuse before acceptance: draining, too large, rate limited."""
        if self.draining:
            raise ShuttingDown("the server is shutting down", retry_after_ms=1000)
        limit = self.settings.limits.max_message_chars
        if len(chat.message) > limit:
            raise TooLarge(f"message is {len(chat.message)} characters; the limit is {limit}")
        self.rate_limiter.check(chat.client)

    async def run(self, chat: ChatInput, out: RequestOutput, scope: trio.CancelScope) -> None:
        """Run one chat to exactly one terminal event on ``out``."""
        request_id = self.new_request_id()
        started = trio.current_time()
        turn = Turn(out.send, ToolContext(request_id, chat.session, chat.metadata))
        terminal: Event
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                self.check(chat)
                await out.send(Accepted(request_id))
                timeout = self.settings.limits.request_timeout_s
                with scope, trio.move_on_after(timeout) as deadline:
                    await self._answer(chat, turn, out)
                if deadline.cancelled_caught:
                    raise DeadlineExceeded(f"the request passed its {timeout:g} s deadline")
                finish = "cancelled" if scope.cancelled_caught else turn.finish_reason
                if chat.session and finish in ("stop", "length"):
                    await self._remember(chat, turn)
                terminal = self._done(request_id, turn, finish, started)
            except* ChatdError as group:
                error = _first_leaf(group)
                assert isinstance(error, ChatdError)
                log.info("request failed", code=error.code, error=error.message)
                terminal = error_event(error)
            except* Exception as group:
                log.error("request crashed", exc_info=_first_leaf(group))
                terminal = Error("internal", f"internal error; the log has it under {request_id}")
            await out.send(terminal)

    async def _answer(self, chat: ChatInput, turn: Turn, out: RequestOutput) -> None:
        def on_position(position: int) -> None:
            out.send_nowait(Queued(position))

        limits = self.settings.limits
        async with self.admission.slot(self.admission.prepare, on_position) as waited:
            history = await self.sessions.history(chat.session) if chat.session else []
            messages = build_prompt(
                self.settings.system_prompt, history, chat.message, limits.prompt_token_budget
            )
        turn.queue_s += waited
        async with self.admission.slot(self.admission.llm_streams, on_position) as waited:
            turn.queue_s += waited
            await answer(turn, self.llm, self.tools, messages)

    async def _remember(self, chat: ChatInput, turn: Turn) -> None:
        assert chat.session is not None
        await self.sessions.append(
            chat.session,
            [
                {"role": "user", "content": chat.message},
                {"role": "assistant", "content": turn.text},
            ],
        )

    def _done(self, request_id: str, turn: Turn, finish: str, started: float) -> Done:
        now = trio.current_time()
        first = turn.first_token_at
        return Done(
            request_id=request_id,
            finish_reason=finish,
            path=turn.path,
            shared=False,
            cached=False,
            usage={
                "prompt_tokens": turn.prompt_tokens,
                "completion_tokens": turn.completion_tokens,
            },
            timings={
                "queue_ms": round(turn.queue_s * 1000),
                "ttft_ms": None if first is None else round((first - started) * 1000),
                "total_ms": round((now - started) * 1000),
            },
        )
