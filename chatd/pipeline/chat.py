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

import collections
import functools
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs
import structlog
import trio

from chatd.config import Settings
from chatd.exceptions import (
    ChatdError,
    DeadlineExceeded,
    Overloaded,
    ShuttingDown,
    TooLarge,
    crash_message,
    first_leaf,
)
from chatd.llm import Message
from chatd.observability.metrics import Metrics
from chatd.observability.spans import RequestTrace, SpanHandle
from chatd.pipeline.admission import Admission, is_local
from chatd.pipeline.answer import answer
from chatd.pipeline.events import (
    Accepted,
    Done,
    Error,
    Event,
    Queued,
    error_event,
    merged,
)
from chatd.pipeline.flights import Flight, Flights, flight_key, replay
from chatd.pipeline.kb_version import KBVersion
from chatd.pipeline.prepare import build_prompt
from chatd.pipeline.ratelimit import RateLimiter
from chatd.pipeline.registry import RequestRegistry
from chatd.pipeline.request import CachedAnswer, ChatInput, RequestOutput
from chatd.pipeline.resume import Journals
from chatd.pipeline.turn import AnswerTooLong, ChatStreamer, Turn
from chatd.resilience.breaker import CircuitBreaker
from chatd.stores.cache import AnswerCache
from chatd.stores.kb import KnowledgeBase
from chatd.stores.sessions import SessionStore
from chatd.tools.base import ToolContext
from chatd.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from chatd.stores.redis.client import RedisClient

__all__ = ["Pipeline"]

log = structlog.get_logger("chatd.pipeline")

# How long charging a token budget may take once the answer is over (a Redis
# call on a shared limiter), even when the client has gone.
CHARGE_TIMEOUT_S = 2.0


async def _unsent(event: Event) -> None:
    raise AssertionError("a flight's turn sends through the flight")  # pragma: no cover


@attrs.frozen
class Pipeline:
    """Everything a request needs, shared by all requests of the process:
    built, run and torn down by :func:`chatd.server.services.open_pipeline`.
    (``attrs.evolve`` gives a copy with run-time state of its own: draining,
    the knowledge base's version, journals and per-client counts.)"""

    settings: Settings
    llm: ChatStreamer
    tools: ToolRegistry
    sessions: SessionStore
    admission: Admission
    rate_limiter: RateLimiter
    requests: RequestRegistry
    breakers: dict[str, CircuitBreaker] = attrs.field(factory=dict)
    metrics: Metrics = attrs.field(factory=Metrics)
    flights: Flights | None = None
    cache: AnswerCache[CachedAnswer] | None = None
    redis: RedisClient | None = None
    """The shared Redis, where one is configured (flights across instances use it)."""
    kb: KnowledgeBase | None = None
    """The knowledge base the tools answer from: its version keys answers."""
    kb_version: KBVersion = attrs.field(
        default=attrs.Factory(lambda self: KBVersion(self.kb), takes_self=True), init=False
    )
    """The knowledge base's version as last read: part of every answer's key."""
    journals: Journals = attrs.field(
        default=attrs.Factory(lambda self: Journals(self.redis), takes_self=True), init=False
    )
    """Resumable requests, by request id (:mod:`chatd.pipeline.resume`)."""
    in_flight: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    """Requests in flight by client, for ``limits.max_requests_per_client``."""
    _drained: trio.Event = attrs.field(factory=trio.Event, init=False)

    @property
    def draining(self) -> bool:
        """True once :meth:`start_draining` was called: new requests are refused."""
        return self._drained.is_set()

    def start_draining(self) -> None:
        """Refuse new requests from now on (those in flight go on)."""
        self._drained.set()

    def new_request_id(self) -> str:
        """A server-made id, unique enough to find a request in the logs."""
        return "req_" + secrets.token_hex(8)

    async def check(self, chat: ChatInput) -> None:
        """Refuse before acceptance: draining, too large, too many in flight
        from this client, rate limited."""
        if self.draining:
            raise ShuttingDown("the server is shutting down", retry_after_ms=1000)
        limits = self.settings.limits
        if len(chat.message) > limits.max_message_chars:
            raise TooLarge(
                f"message is {len(chat.message)} characters; "
                f"the limit is {limits.max_message_chars}"
            )
        if self.in_flight[chat.client] > limits.max_requests_per_client and not is_local(
            chat.client
        ):
            raise Overloaded(
                f"{limits.max_requests_per_client} requests of this client already in flight",
                retry_after_ms=1000,
            )
        await self.rate_limiter.check(chat.client)

    @contextmanager
    def _counted(self, client: str) -> Iterator[None]:
        """Count a request of ``client``'s in flight for the block."""
        self.in_flight[client] += 1
        try:
            yield
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]

    async def run(self, chat: ChatInput, out: RequestOutput, scope: trio.CancelScope) -> None:
        """Run one chat to exactly one terminal event on ``out``."""
        request_id = self.new_request_id()
        # The spans' logger carries the caller's context (its connection id), as
        # some spans are written from a shared flight's task, which has its own.
        context = structlog.contextvars.get_contextvars()
        trace = RequestTrace(
            request_id,
            log=structlog.get_logger("chatd.trace").bind(**context),
            include_text=self.settings.log.include_text,
            log_spans=self.settings.log.level == "debug",
        )
        started = trace.started
        turn = Turn(
            out.send,
            ToolContext(request_id, chat.session, chat.metadata),
            notify=out.send_nowait,
            push=out.try_send,
            on_tool=self.metrics.tool_finished,
            trace=trace,
            max_chars=self.settings.limits.max_answer_chars,
        )
        terminal: Done | Error | None = None
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                terminal = await self._attempt(chat, out, scope, turn, request_id, started)
                await out.send(terminal)
            except Exception as exc:  # the output failed (a bug): this request ends, alone
                log.error("request crashed", exc_info=exc)
            finally:
                try:
                    self._count(chat, turn, terminal, started)
                except Exception as exc:
                    log.error("request summary failed", exc_info=exc)

    async def _attempt(
        self,
        chat: ChatInput,
        out: RequestOutput,
        scope: trio.CancelScope,
        turn: Turn,
        request_id: str,
        started: float,
    ) -> Done | Error:
        """Everything but sending the terminal event, which it returns."""
        try:
            timeout = self.settings.limits.request_timeout_s
            # The checks run in the client's scope too: a cancel stops a rate
            # limiter's call to Redis as it stops the answer.
            deadline = trio.move_on_after(timeout)  # counts from when it is entered
            with self.requests.track(request_id) as tracked, self._counted(chat.client), scope:
                try:
                    with turn.trace.span("admission"):
                        await self.check(chat)
                    await out.send(Accepted(request_id))
                    with deadline, tracked.scope:
                        turn.on_state = tracked.enter
                        await self._answer(chat, turn)
                finally:
                    await self._charge(chat.client, turn)
            if deadline.cancelled_caught:
                self.metrics.cancelled("deadline")
                raise DeadlineExceeded(f"the request passed its {timeout:g} s deadline")
            if tracked.reaped is not None:
                self.metrics.cancelled("janitor")
                raise DeadlineExceeded(f"reaped by the janitor: {tracked.reaped}")
            finish = turn.finish_reason
            if tracked.scope.cancelled_caught and not scope.cancelled_caught:
                self.metrics.cancelled("drain")
                raise ShuttingDown(
                    "the server shut down before the answer finished", retry_after_ms=1000
                )
            if scope.cancelled_caught:
                finish = "cancelled"
                self.metrics.cancelled("client_cancel")
            elif chat.session:
                await self._remember(chat, turn)
            return turn.done(request_id, finish, started)
        except* ChatdError as group:
            error = first_leaf(group)
            assert isinstance(error, ChatdError)
            log.warning("request failed", code=error.code, error=error.message, detail=error.detail)
            failed = attrs.evolve(error_event(error), request_id=request_id)
            del error  # it holds this frame through its traceback: no cycle to collect
        except* Exception as group:
            log.error("request crashed", exc_info=first_leaf(group))
            failed = Error("internal", crash_message(request_id), request_id=request_id)
        return failed

    async def _charge(self, client: str, turn: Turn) -> None:
        """Count the answer's tokens against ``client``'s budget for the day,
        shielded: a client that goes mid-answer (which cancels its
        connection's work at once) still pays for what it was sent."""
        used = turn.prompt_tokens + turn.completion_tokens
        if self.rate_limiter.tokens_per_day and used and not turn.cached:
            with trio.move_on_after(CHARGE_TIMEOUT_S, shield=True) as charging:
                await self.rate_limiter.charge(client, used)
            if charging.cancelled_caught:
                log.warning("token budget not charged", tokens=used, timeout_s=CHARGE_TIMEOUT_S)

    def _count(
        self, chat: ChatInput, turn: Turn, terminal: Done | Error | None, started: float
    ) -> None:
        """Metrics, the stream span and the summary line of a finished request;
        no terminal means its connection went."""
        if terminal is None:
            outcome = "cancelled"
            self.metrics.cancelled("disconnect")
        elif isinstance(terminal, Error):
            outcome = terminal.code
        else:
            outcome = "cancelled" if terminal.finish_reason == "cancelled" else "done"
        first = turn.first_token_at
        now = trio.current_time()
        self.metrics.request_finished(
            turn.path,
            outcome,
            None if first is None else first - started,
            now - started,
            turn.completion_tokens,
            turn.shared,
            turn.cached,
            turn.queue_s,
        )
        if first is not None:
            turn.trace.record("stream", first, now, tokens=turn.completion_tokens)
        turn.trace.summary(
            path=turn.path,
            outcome=outcome,
            error=terminal.message if isinstance(terminal, Error) else None,
            shared=turn.shared,
            cached=turn.cached,
            tokens={"prompt": turn.prompt_tokens, "completion": turn.completion_tokens},
            queue_ms=round(turn.queue_s * 1000, 3),
            message=chat.message,
            answer=turn.text,
        )

    async def _answer(self, chat: ChatInput, turn: Turn) -> None:
        limits = self.settings.limits
        trace = turn.trace
        with trace.span("prepare") as prepare:
            async with self.admission.slot(
                self.admission.prepare, turn.queued, chat.client
            ) as held:
                waited = held.waited
                trace.record_wait(waited, "prepare")
                history = chat.history or (
                    await self.sessions.history(chat.session_key) if chat.session else ()
                )
                messages = build_prompt(
                    self.settings.system_prompt, history, chat.message, limits.prompt_token_budget
                )
            prepare.set(messages=len(messages))
        turn.queue_s += waited
        try:
            await self._answer_to(messages, turn, chat.client)
        finally:
            turn.count_unfinished(messages)

    async def _answer_to(self, messages: list[Message], turn: Turn, client: str) -> None:
        """The answer to ``messages``: from the cache, a shared flight, or an LLM."""
        trace = turn.trace
        key = flight_key(self.llm.model, self.tools.names, messages, self.kb_version.value)
        if self.cache is not None:
            with trace.span("cache") as lookup:
                hit = await self.cache.get(key)
                lookup.set(hit=hit is not None)
            if hit is not None:
                await replay(hit.events, turn)
                turn.adopt(hit.outcome)
                turn.cached = True
                return
        if self.flights is None:
            await self._fly(messages, turn, client)
            return

        def make_turn() -> Turn:
            return Turn(
                _unsent,
                turn.context,
                on_tool=turn.on_tool,
                trace=turn.trace,
                max_chars=turn.max_chars,
            )

        with trace.span("flight") as span:
            work = functools.partial(self._fly_and_keep, messages, key, span, client)
            flight, created = self.flights.join(key, make_turn, work)
            span.set(created=created)
            if not created:
                span.set(flight_of=flight.turn.context.request_id)
            turn.on_state("routing")
            try:
                followed = await self.flights.follow(flight, turn, created=created)
            finally:
                self.flights.leave(flight, created=created)
        if not followed:  # the flight stopped being shared before any event: answer alone
            await self._fly(messages, turn, client)

    async def _fly(self, messages: list[Message], turn: Turn, client: str) -> None:
        """Answer with an LLM-stream slot held throughout (queued fairly among
        ``client``'s peers)."""
        turn.on_state("queued")
        async with self.admission.slot(self.admission.llm_streams, turn.queued, client) as held:
            turn.queue_s += held.waited
            turn.trace.record_wait(held.waited, "llm_streams")
            try:
                await answer(turn, self.llm, self.tools, messages, done_with_llm=held.release)
            except* AnswerTooLong:  # its stream closed on the way out
                turn.finish_reason = "length"

    async def _fly_and_keep(
        self, messages: list[Message], key: str, span: SpanHandle, client: str, flight: Flight
    ) -> None:
        """A flight's work: answer, then keep a shareable answer in the cache.
        Its spans go under its creator's ``flight`` span (this task is not the
        creator's child)."""
        turn = flight.turn
        with turn.trace.under(span):
            await self._fly(messages, turn, client)
        keep = turn.shareable and not turn.degraded  # the LLM would answer otherwise
        if self.cache is not None and keep and turn.finish_reason in ("stop", "length"):
            events = merged(e for e in flight.events if not isinstance(e, Queued))
            await self.cache.put(key, CachedAnswer(events, turn.outcome()))

    async def _remember(self, chat: ChatInput, turn: Turn) -> None:
        assert chat.session is not None
        await self.sessions.append(
            chat.session_key,
            [
                {"role": "user", "content": chat.message},
                {"role": "assistant", "content": turn.text},
            ],
        )
