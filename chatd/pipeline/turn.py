"""A request's answer in the making (:class:`Turn`): it sends the events, keeps
the tally (path, usage, first token, degraded), and hands on how it ended
(:class:`Outcome`) to a flight's followers or the cache; and what answers
need of an LLM (:class:`ChatStreamer`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs
import trio

from chatd.llm import ChatEvent, ChatRequest, Completion
from chatd.llm.types import Message, estimate_prompt_tokens, estimate_tokens
from chatd.observability.spans import RequestTrace
from chatd.pipeline.events import Done, Event, Queued, Route, Token
from chatd.pipeline.registry import RequestState
from chatd.tools.base import ToolContext

__all__ = ["AnswerTooLong", "ChatStreamer", "Outcome", "Turn"]


class ChatStreamer(Protocol):
    """What answers need of an LLM: a model name and streamed calls
    (an :class:`~chatd.llm.LLMClient`, or the pipeline's :class:`Upstream`)."""

    @property
    def model(self) -> str: ...

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[ChatEvent]]: ...


class AnswerTooLong(Exception):
    """An answer reached its turn's ``max_chars``: whoever streams it stops
    (leaving closes the LLM call); the answer ends with ``length``."""


@attrs.frozen
class Outcome:
    """How an answer ended, apart from its events: what a cache or a flight hands on."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tools_used: tuple[str, ...]
    degraded: bool = False
    """Answered by the knowledge base alone, the LLM being unavailable."""


@attrs.define
class Turn:
    """One request's answer in the making: sends its events, keeps the tally."""

    send: Callable[[Event], Awaitable[None]]
    context: ToolContext
    trace: RequestTrace = attrs.field(
        default=attrs.Factory(lambda turn: RequestTrace(turn.context.request_id), takes_self=True),
        kw_only=True,
    )
    """The request's spans (a flight's turn writes into its creator's)."""
    notify: Callable[[Event], None] = lambda _event: None
    """Advisory events (queue positions) that must not wait."""
    push: Callable[[Event], bool] | None = None
    """Send an event now if that needs no waiting; ``False`` if it would wait."""
    on_state: Callable[[RequestState], None] = lambda _state: None
    """Told each state the request enters, for the janitor's deadlines."""
    on_unshareable: Callable[[], None] | None = None
    """Called when the router picks a time-bound or user-bound tool."""
    on_tool: Callable[[str, bool, float], None] = lambda _tool, _ok, _seconds: None
    """Told each tool run: its name, whether it succeeded, its seconds (metrics)."""
    shareable: bool = True
    shared: bool = False
    cached: bool = False
    path: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    queue_s: float = 0.0
    tools_used: tuple[str, ...] = ()
    degraded: bool = False
    """The LLM was unavailable and a natural-answer tool answered alone."""
    max_chars: int | None = None
    """Past this many characters, :meth:`token` raises :class:`AnswerTooLong`."""
    _chars: int = 0
    _text: list[str] = attrs.field(factory=list)

    def outcome(self) -> Outcome:
        """How this answer ended."""
        return Outcome(
            self.finish_reason,
            self.prompt_tokens,
            self.completion_tokens,
            self.tools_used,
            self.degraded,
        )

    def adopt(self, outcome: Outcome) -> None:
        """End as another answer ended (one shared or cached)."""
        self.finish_reason = outcome.finish_reason
        self.prompt_tokens = outcome.prompt_tokens
        self.completion_tokens = outcome.completion_tokens
        self.tools_used = outcome.tools_used
        self.degraded = outcome.degraded

    def done(self, request_id: str, finish: str, started: float) -> Done:
        """The ``done`` event of this answer, for a request that started at ``started``."""
        now = trio.current_time()
        first = self.first_token_at
        return Done(
            request_id=request_id,
            finish_reason=finish,
            path=self.path,
            shared=self.shared,
            cached=self.cached,
            usage={
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            timings={
                "queue_ms": round(self.queue_s * 1000),
                "ttft_ms": None if first is None else round((first - started) * 1000),
                "total_ms": round((now - started) * 1000),
            },
            degraded=self.degraded or None,
        )

    def queued(self, position: int) -> None:
        """Tell the client its queue position (advisory: may be dropped)."""
        self.notify(Queued(position))

    @property
    def text(self) -> str:
        """The answer so far."""
        return "".join(self._text)

    async def route(self, path: str, tools: Sequence[str] = ()) -> None:
        """The path is final: say so once."""
        self.path, self.tools_used = path, tuple(tools)
        self.on_state("streaming")
        await self.send(Route(path, tuple(tools)))

    async def say(self, text: str) -> None:
        """Text from an LLM: the answer, and the route ``direct`` if none was set."""
        if self.path is None:
            await self.route("direct")
        await self.token(text)

    async def token(self, text: str) -> None:
        """Send the next piece of the answer."""
        if not text:
            return
        if self.max_chars is not None:
            self._chars += len(text)
            if self._chars > self.max_chars:
                raise AnswerTooLong(f"the answer passed {self.max_chars} characters")
        if self.first_token_at is None:
            self.first_token_at = trio.current_time()
            self.on_state("streaming")
        self._text.append(text)
        await self.send(Token(text))

    def push_token(self, text: str) -> bool:
        """Send the next piece of the answer now, without waiting: a shared
        flight hands a caught-up follower its tokens this way. ``False`` (and
        nothing done) where it would wait, or before the first token, whose
        bookkeeping :meth:`token` does."""
        if self.push is None or self.first_token_at is None:
            return False
        if text and not self.push(Token(text)):
            return False
        self._text.append(text)
        return True

    def count(self, completion: Completion) -> None:
        """Add one LLM call's usage."""
        if completion.usage is not None:
            self.prompt_tokens += completion.usage.prompt_tokens
            self.completion_tokens += completion.usage.completion_tokens

    def count_unfinished(self, messages: Sequence[Message]) -> None:
        """A request that ended before its answer's usage was known to it (its
        client went or cancelled while following a flight, or the answer
        failed part way) counts what it was sent: its prompt, estimated, and
        the tokens of the text it streamed."""
        if not (self.prompt_tokens or self.completion_tokens) and self._text:
            self.prompt_tokens = estimate_prompt_tokens(messages)
            self.completion_tokens = estimate_tokens(self.text)

    def count_cut_off(self, messages: Sequence[Message], chunks: int) -> None:
        """Add the usage of an LLM call left before it reported any (the
        client went or cancelled, Path B took over, the answer grew too long):
        its prompt, estimated, and a token for each chunk it streamed. A call
        that streamed nothing counts nothing."""
        if chunks:
            self.prompt_tokens += estimate_prompt_tokens(messages)
            self.completion_tokens += chunks
