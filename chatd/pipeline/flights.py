"""Shared flights: identical work in flight is done once (singleflight for streams).

A flight answers one prompt in the server-owned flights nursery, under its own
cancel scope, and records every event it makes. Requests with the same key
subscribe: each replays the events from the start, then follows them live,
from its own task and under its own scope. So:

- one subscriber leaving (cancel, disconnect, its own deadline) only detaches
  it; the first asker is not special, and its leaving harms nobody else;
- the last one leaving cancels the flight (closing its LLM call) and removes
  its key in the same synchronous step, so the next asker starts afresh and
  no waiter can delete a key whose work still runs (Go's singleflight traps);
- a failed flight keeps its :class:`~chatd.exceptions.Failure`, from which
  each subscriber raises an exception of its own, and a
  subscriber never sees a ``Cancelled`` that is not its own.

A flight whose router picks a time-bound or user-bound tool stops being
shared: its key is removed, it goes on for the request that started it (its
tool context is that request's), and every other subscriber *diverges*: it
answers alone. Nothing reaches a client before that point, as tool calls
produce no events until the tools start.

A flight's memory is bounded whatever its followers do: once its furthest
follower is ``WINDOW`` events or ``WINDOW_CHARS`` characters of answer
behind (an event is a whole read, many tokens; every follower has stopped
reading), the flight stops reading upstream until one catches up. A flight
paused long enough hits the LLM's gap timeout and ends; one whose followers
the janitor reaps ends when the last of them leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence

import attrs
import orjson
import structlog
import trio

from chatd.exceptions import ChatdError, Failure, first_leaf
from chatd.llm import Message
from chatd.pipeline.events import Event, Route, Token, ToolStart
from chatd.pipeline.turn import Turn
from chatd.resilience.janitor import Reap

__all__ = [
    "STOPPED",
    "WINDOW",
    "WINDOW_CHARS",
    "AnswerAlone",
    "Flight",
    "Flights",
    "FlightsStatistics",
    "flight_key",
    "replay",
]

WINDOW = 512
"""Events a flight records ahead of its furthest follower before it waits."""
WINDOW_CHARS = 16 * 1024
"""Characters of answer a flight records ahead of its furthest follower before it waits."""

log = structlog.get_logger("chatd.flights")


class AnswerAlone(ChatdError):
    """Not an error: raised by a flight's work, it tells every subscriber, its
    creator too, to answer alone (the flight it relayed stopped being shared)."""


STOPPED = Failure("timeout", "the shared answer was stopped before it finished")
"""How a flight ends that neither finished nor failed (its deadline, or shutdown)."""


def flight_key(
    model: str, tools: Sequence[str], messages: Sequence[Message], kb_version: str = ""
) -> str:
    """The identity of a piece of work: normalised prompt, model, tool set and
    the knowledge base's version (its answers come from its entries)."""

    def norm(text: object) -> object:
        return " ".join(text.split()).casefold() if isinstance(text, str) else text

    prompt = [(m.get("role"), norm(m.get("content"))) for m in messages]
    blob = orjson.dumps([model, sorted(tools), prompt, kb_version])
    return hashlib.sha256(blob).hexdigest()


@attrs.frozen
class FlightsStatistics:
    """Flights under way and how sharing went."""

    in_flight: int
    subscribers: int
    started: int
    joined: int
    diverged: int


Sink = Callable[[Event], bool]
"""Takes one event now, or says ``False`` and takes nothing."""


@attrs.define(eq=False)
class Flight:
    """One piece of work in flight and what it has said so far."""

    key: str
    turn: Turn
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    events: list[Event] = attrs.field(factory=list)
    subscribers: int = 0
    creator_here: bool = True
    diverged: bool = False
    finished: bool = False
    failure: Failure | None = None
    alone: bool = False
    """Its work said every subscriber must answer alone (:class:`AnswerAlone`)."""
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _sinks: dict[Sink, trio.Event] = attrs.field(factory=dict)
    """Caught-up followers taking tokens as they come, each with what wakes it."""
    furthest: int = 0
    """The most events any follower has taken."""
    _room: trio.Event | None = None
    _published_chars: int = 0
    _taken_chars: int = 0

    async def publish(self, event: Event) -> None:
        """Record an event and wake the subscribers (the flight's turn sends
        through this). No checkpoint while a follower keeps up: the flight's
        work checkpoints at its every read, and yielding per event cost a
        task switch per token. Past ``WINDOW`` events ahead of every
        follower, wait for one (the module docstring)."""
        self.publish_nowait(event)
        if type(event) is Token:
            self._published_chars += len(event.text)
        while self.subscribers and (
            len(self.events) - self.furthest > WINDOW
            or self._published_chars - self._taken_chars > WINDOW_CHARS
        ):
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    def reached(self, index: int) -> None:
        """A follower (or a mirror) has taken the first ``index`` events."""
        if index > self.furthest:
            for event in self.events[self.furthest : index]:
                if type(event) is Token:
                    self._taken_chars += len(event.text)
            self.furthest = index
            if self._room is not None:
                self._room.set()
                self._room = None

    def publish_nowait(self, event: Event) -> None:
        """Record an event and hand it on, without a checkpoint: to each
        caught-up follower that can take it without waiting, else by waking it."""
        self.events.append(event)
        for sink, woken in list(self._sinks.items()):
            if not sink(event):
                del self._sinks[sink]
                woken.set()
        self._wake_pulling()

    def _wake(self) -> None:
        """The flight ended or diverged: every follower looks again."""
        for woken in self._sinks.values():
            woken.set()
        self._sinks.clear()
        self._wake_pulling()

    def _wake_pulling(self) -> None:
        """Wake the followers waiting in :meth:`changed`."""
        self._changed.set()
        self._changed = trio.Event()

    async def taken_as_they_come(self, sink: Sink) -> None:
        """Let ``sink`` take each new event as it is published, until one it
        cannot take without waiting, or the end; the caller then looks again."""
        woken = self._sinks[sink] = trio.Event()
        try:
            await woken.wait()
        finally:
            self._sinks.pop(sink, None)

    async def changed(self) -> None:
        """Wait for the next event or the end."""
        await self._changed.wait()


Work = Callable[[Flight], Awaitable[None]]
"""The flight's work: answer into ``flight.turn``."""


@attrs.define
class Flights:
    """The registry of flights by key; runs them in a nursery it was handed."""

    nursery: trio.Nursery
    deadline_s: float
    _flights: dict[str, Flight] = attrs.field(factory=dict, init=False)
    _started: int = attrs.field(default=0, init=False)
    _joined: int = attrs.field(default=0, init=False)
    _diverged: int = attrs.field(default=0, init=False)

    def join(self, key: str, make_turn: Callable[[], Turn], work: Work) -> tuple[Flight, bool]:
        """Subscribe to the flight for ``key``, starting it if there is none.

        Returns the flight and whether this caller created it. The caller must
        :meth:`leave` it, in a ``finally``.
        """
        flight = self._flights.get(key)
        created = flight is None
        if flight is None:
            flight = Flight(key, make_turn())
            flight.turn.on_unshareable = lambda f=flight: self._unshare(f)
            flight.turn.send = flight.publish
            flight.turn.notify = flight.publish_nowait
            self._flights[key] = flight
            self._started += 1
            self.nursery.start_soon(self._fly, flight, work, name=f"flight {key[:12]}")
        else:
            self._joined += 1
        flight.subscribers += 1
        return flight, created

    def leave(self, flight: Flight, *, created: bool) -> None:
        """Unsubscribe; the last one out cancels the flight and drops its key."""
        flight.subscribers -= 1
        if created:
            flight.creator_here = False
        if flight.subscribers == 0 and not flight.finished:
            self._forget(flight)
            flight.scope.cancel()

    def _forget(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def _unshare(self, flight: Flight) -> None:
        """Stop sharing a flight whose tools depend on the time or the asker."""
        self._forget(flight)
        if flight.subscribers > (1 if flight.creator_here else 0):
            flight.diverged = True
            self._diverged += 1
            flight._wake()
        if not flight.creator_here:
            flight.scope.cancel()

    async def _fly(self, flight: Flight, work: Work) -> None:
        completed = False
        try:
            with flight.scope:
                flight.scope.deadline = trio.current_time() + self.deadline_s
                try:
                    await work(flight)
                    completed = True
                # Kept as data: each subscriber raises an exception of its own,
                # and no traceback keeps this frame (and the flight) alive.
                except* AnswerAlone:
                    flight.alone = True
                except* ChatdError as group:
                    flight.failure = Failure.of(first_leaf(group))
                except* Exception as group:
                    log.error("flight crashed", exc_info=first_leaf(group))
                    flight.failure = Failure.of(first_leaf(group), flight.turn.context.request_id)
        finally:
            if not completed and flight.failure is None and not flight.alone:
                # Its own deadline, or the server shutting down: never a bare Cancelled.
                flight.failure = STOPPED
            flight.finished = True
            self._forget(flight)
            flight._wake()
            # The flight and its turn point at each other; cut that when done.
            flight.turn.on_unshareable = None
            flight.turn.send = _discard
            flight.turn.notify = _ignore

    async def follow(self, flight: Flight, turn: Turn, *, created: bool) -> bool:
        """Replay and follow ``flight`` into ``turn``; ``False`` if this caller must
        answer alone instead (the flight diverged). Raises its own copy of the
        flight's failure, as an exception of its own."""
        index = 0
        while True:
            if flight.diverged and not created:
                return False
            if index < len(flight.events):
                events = flight.events[index:]
                index += len(events)
                await replay(events, turn)  # more may come meanwhile: look again
                flight.reached(index)
                continue
            if flight.finished:
                break

            # Caught up: take tokens as they are published, with no task switch
            # per token; anything else, or a token that would wait, wakes us.
            def take(event: Event) -> bool:
                nonlocal index
                if type(event) is Token and turn.push_token(event.text):
                    index += 1
                    flight.reached(index)  # it is caught up
                    return True
                return False

            # No checkpoint since the length check, so no event can be missed.
            await flight.taken_as_they_come(take)
        if flight.alone:
            return False
        if flight.failure is not None:
            raise flight.failure.exception()
        turn.adopt(flight.turn.outcome())
        turn.queue_s += flight.turn.queue_s
        turn.shared = not created
        return True

    def sweep(self) -> list[Reap]:
        """Reap flights nobody follows (the janitor's backstop; ``leave`` does it first)."""
        orphans = [f for f in self._flights.values() if f.subscribers == 0 and not f.finished]
        for flight in orphans:
            self._forget(flight)
            flight.scope.cancel()
        return [Reap("flight", f.key[:12], "no subscribers") for f in orphans]

    def statistics(self) -> FlightsStatistics:
        """Flights under way, their subscribers, and the counts so far."""
        flights = list(self._flights.values())
        return FlightsStatistics(
            in_flight=len(flights),
            subscribers=sum(f.subscribers for f in flights),
            started=self._started,
            joined=self._joined,
            diverged=self._diverged,
        )


async def _discard(event: Event) -> None:
    """A finished flight's turn sends nowhere."""


def _ignore(event: Event) -> None:
    """A finished flight's turn notifies nobody."""


async def replay(events: Sequence[Event], turn: Turn) -> None:
    """Send recorded events through ``turn``, keeping its tally."""
    for event in events:
        if isinstance(event, Token):
            await turn.token(event.text)
        elif isinstance(event, Route):
            await turn.route(event.path, event.tools)
        else:
            if isinstance(event, ToolStart):
                turn.on_state("tools")
            await turn.send(event)
