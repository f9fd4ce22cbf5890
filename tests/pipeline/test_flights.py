"""A flight hands caught-up followers their tokens directly, in order, and a
follower that cannot take one without waiting catches up on its own."""

from __future__ import annotations

import attrs
import trio
import trio.lowlevel

from chatd.pipeline.answer import Turn
from chatd.pipeline.events import Event, Route, Token
from chatd.pipeline.flights import Flight, Flights
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
            try:
                assert await flights.follow(flight, turn, created=created)
            finally:
                flights.leave(flight, created=created)

        for index, follower in enumerate(followers):
            nursery.start_soon(ask, index, follower)
    expected: list[Event] = [Route("direct", ()), *(Token(t) for t in TEXTS)]
    for follower in followers:
        assert follower.received == expected
    assert followers[0].pushed >= len(TEXTS) - 2, "caught up, it took tokens as they came"
    assert followers[1].pushed == 5
    assert followers[2].pushed == 0
