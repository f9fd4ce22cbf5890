"""A flight hands caught-up followers their tokens directly, in order, and a
follower that cannot take one without waiting catches up on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio
import trio.lowlevel

from chatd.pipeline.events import Event, Route, Token
from chatd.pipeline.flights import Flight, Flights
from chatd.pipeline.turn import Turn
from chatd.tools.base import ToolContext

TEXTS = [f"t{i} " for i in range(20)]


@attrs.define
class Follower:
    """A subscriber's output: events sent (awaited) or pushed (taken at once)."""

    room: int = 1_000
    """Pushes it takes before saying it would wait."""
    received: list[Event] = attrs.field(factory=list)
    pushed: int = 0

    async def send(self, event: Event) -> None:
        await trio.lowlevel.checkpoint()
        self.received.append(event)

    def push(self, event: Event) -> bool:
        if self.pushed >= self.room:
            return False
        self.pushed += 1
        self.received.append(event)
        return True

    def turn(self, request_id: str) -> Turn:
        return Turn(self.send, ToolContext(request_id), push=self.push)


async def _unsent(event: Event) -> None:
    raise AssertionError("a flight's turn sends through the flight")


def own_turn() -> Turn:
    """The flight's own turn (joining makes it publish to the flight)."""
    return Turn(_unsent, ToolContext("flight"))


async def follow_then_leave(flights: Flights, flight: Flight, turn: Turn, created: bool) -> bool:
    """Follow ``flight`` with ``turn`` to its end, then leave it, however following ended."""
    try:
        return await flights.follow(flight, turn, created=created)
    finally:
        flights.leave(flight, created=created)


async def _never_reads(event: Event) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def unread_flight(
    work: Callable[[Flight], Awaitable[None]],
) -> AsyncIterator[tuple[Flights, Flight]]:
    """A flight running ``work`` whose one follower never reads and leaves after 30 s
    (the janitor reaping it); the flights, still running, and the flight."""
    async with trio.open_nursery() as nursery:
        flights = Flights(nursery, deadline_s=600)
        flight, created = flights.join("key", own_turn, work)
        with trio.move_on_after(30):
            await follow_then_leave(flights, flight, Turn(_never_reads, ToolContext("r1")), created)
        yield flights, flight


async def answer(flight: Flight) -> None:
    await flight.turn.route("direct")
    for text in TEXTS:
        await flight.turn.token(text)
        await trio.sleep(0.01)


async def test_followers_get_every_event_in_order(autojump_clock: trio.abc.Clock) -> None:
    """Three followers: one takes every token directly, one refuses after five
    (and then replays the rest itself), one takes none; all see the same."""
    followers = [Follower(), Follower(room=5), Follower(room=0)]
    async with trio.open_nursery() as nursery:
        flights = Flights(nursery, deadline_s=60)

        async def ask(index: int, follower: Follower) -> None:
            turn = follower.turn(f"r{index}")
            flight, created = flights.join("key", own_turn, answer)
            assert await follow_then_leave(flights, flight, turn, created)

        for index, follower in enumerate(followers):
            nursery.start_soon(ask, index, follower)
    expected: list[Event] = [Route("direct", ()), *(Token(t) for t in TEXTS)]
    for follower in followers:
        assert follower.received == expected
    assert followers[0].pushed >= len(TEXTS) - 2, "caught up, it took tokens as they came"
    assert followers[1].pushed == 5
    assert followers[2].pushed == 0


async def test_a_flight_waits_for_its_furthest_follower(autojump_clock: trio.abc.Clock) -> None:
    """When every follower has stopped reading, the flight stops reading its
    answer WINDOW events ahead of the furthest; it goes on when one reads
    again, and ends when the last one leaves."""
    from chatd.pipeline.flights import WINDOW

    produced: list[int] = []
    stalled = trio.Event()

    async def long_answer(flight: Flight) -> None:
        await flight.turn.route("direct")
        for i in range(10 * WINDOW):
            await flight.turn.token(f"t{i} ")
            produced.append(i)
            await trio.sleep(0.001)

    class Stalling(Follower):
        """Reads the first 10 events, then nothing until told."""

        async def send(self, event: Event) -> None:
            if len(self.received) >= 10:
                await stalled.wait()
            await super().send(event)

    follower = Stalling(room=0)
    async with trio.open_nursery() as nursery:
        flights = Flights(nursery, deadline_s=600)
        flight, created = flights.join("key", own_turn, long_answer)

        async with trio.open_nursery() as following:
            following.start_soon(follow_then_leave, flights, flight, follower.turn("r1"), created)
            await trio.sleep(60)
            assert len(flight.events) <= 10 + WINDOW + 1, "it waited for its follower"
            held = len(produced)
            await trio.sleep(60)
            assert len(produced) == held
            stalled.set()  # reading again: the answer goes on to its end
        assert len(produced) == 10 * WINDOW
        assert len(follower.received) == 10 * WINDOW + 1


async def test_a_paused_flight_ends_when_its_followers_leave(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Followers that never read and then leave (the janitor reaped them) end it."""
    from chatd.pipeline.flights import WINDOW

    async def endless(flight: Flight) -> None:
        await flight.turn.route("direct")
        while True:
            await flight.turn.token("t ")
            await trio.sleep(0.001)

    async with unread_flight(endless) as (flights, flight):
        await trio.sleep(1)
        assert flight.finished and len(flight.events) <= WINDOW + 2
        assert flights.statistics().in_flight == 0


async def test_a_flight_waits_for_characters_too(autojump_clock: trio.abc.Clock) -> None:
    """A fast stream comes in few, long events: the flight also waits once it is
    WINDOW_CHARS characters ahead of its furthest follower."""
    from chatd.pipeline.flights import WINDOW_CHARS

    async def long_reads(flight: Flight) -> None:
        await flight.turn.route("direct")
        for _ in range(200):  # 200 reads of 1,000 characters: far fewer than WINDOW events
            await flight.turn.token("x" * 1_000)
            await trio.sleep(0.001)

    async with unread_flight(long_reads) as (_flights, flight):
        chars = sum(len(e.text) for e in flight.events if isinstance(e, Token))
        assert chars <= WINDOW_CHARS + 2_000
