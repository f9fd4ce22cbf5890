"""Flights shared across instances through a real Redis.

Two :class:`RedisFlights` in one trio run stand for two chatd processes: each
has its own Redis client and its own nursery, whose cancellation is that
instance dying. Redis runs on real time, so leases are short (0.3 s) and every
test carries a ``fail_after`` guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import redis
import trio

from chatd.config import RedisSettings
from chatd.exceptions import ChatdError, UpstreamHTTPError, UpstreamUnavailable
from chatd.pipeline.events import Event, Route, Token
from chatd.pipeline.flights import Flight
from chatd.pipeline.flights_redis import LOST, RedisFlights
from chatd.pipeline.turn import Turn
from chatd.stores.redis.client import RedisClient, open_redis
from chatd.testing import wait_until
from chatd.testing_redis import RedisServer
from chatd.tools.base import ToolContext

KEY = "f" * 64
LEASE_S = 0.3
TOKENS = ("Once", " upon", " a", " time")


@attrs.define(eq=False)
class FakeWork:
    """A flight's work: a route, then tokens; it can pause, fail or diverge."""

    tokens: tuple[str, ...] = TOKENS
    pause_at: int | None = None
    """Pause after this many events (0: before the route) until ``resume``."""
    error: Exception | None = None
    diverge: bool = False
    calls: int = 0
    cancelled: bool = False
    paused: trio.Event = attrs.field(factory=trio.Event)
    resume: trio.Event = attrs.field(factory=trio.Event)

    async def __call__(self, flight: Flight) -> None:
        self.calls += 1
        turn = flight.turn
        try:
            await self._maybe_pause(0)
            if self.diverge:
                turn.shareable = False
                assert turn.on_unshareable is not None
                turn.on_unshareable()
            await turn.route("direct")
            for i, text in enumerate(self.tokens, start=1):
                await self._maybe_pause(i)
                await turn.token(text)
            if self.error is not None:
                raise self.error
            turn.prompt_tokens, turn.completion_tokens = 7, len(self.tokens)
        except trio.Cancelled:
            self.cancelled = True
            raise

    async def _maybe_pause(self, emitted: int) -> None:
        if emitted == self.pause_at:
            self.paused.set()
            await self.resume.wait()


async def _unsent(event: Event) -> None:
    raise AssertionError("a flight's turn sends through the flight")


@attrs.define(eq=False)
class Asker:
    """One request subscribed to a flight: what it received and how it ended."""

    flights: RedisFlights
    name: str
    events: list[Event] = attrs.field(factory=list)
    result: bool | BaseException | None = None
    turn: Turn | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)

    async def ask(self, work: FakeWork, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        context = ToolContext(self.name)
        flight, created = self.flights.join(KEY, lambda: Turn(_unsent, context), work)
        self.turn = turn = Turn(self._record, context)
        task_status.started()
        try:
            with self.scope:
                self.result = await self.flights.follow(flight, turn, created=created)
        except ChatdError as exc:
            self.result = exc
        finally:
            self.flights.leave(flight, created=created)
            self.done.set()

    async def _record(self, event: Event) -> None:
        self.events.append(event)


@attrs.define(eq=False)
class Instance:
    """One simulated chatd process."""

    flights: RedisFlights
    client: RedisClient
    scope: trio.CancelScope

    def asker(self, name: str) -> Asker:
        return Asker(self.flights, name)

    def die(self) -> None:
        """Stop at once, as a killed process: Redis hears nothing more from it."""
        self.client.redis = redis.Redis(unix_socket_path="/nonexistent/chatd-test.sock")
        self.scope.cancel()


async def lead_then_follow(
    nursery: trio.Nursery,
    work: FakeWork,
    leader: Asker,
    *followers: Asker,
    follower_work: FakeWork | None = None,
) -> None:
    """``leader`` starts the flight and waits in ``work``; then each follower asks
    (with ``follower_work``, the work it would run if it took the flight over)."""
    await nursery.start(leader.ask, work)
    await work.paused.wait()
    for follower in followers:
        await nursery.start(follower.ask, follower_work or work)


async def run_instance(client: RedisClient, name: str, lease_s: float, *, task_status: Any) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            flights = RedisFlights(nursery, 10.0, redis=client, lease_s=lease_s, instance=name)
            task_status.started(Instance(flights, client, scope))
            await trio.sleep_forever()


@asynccontextmanager
async def open_instances(
    url: str, count: int = 2, lease_s: float = LEASE_S
) -> AsyncIterator[list[Instance]]:
    async with AsyncExitStack() as stack:
        settings = RedisSettings(url=url, socket_timeout_s=0.5)
        clients = [await stack.enter_async_context(open_redis(settings)) for _ in range(count)]
        nursery = await stack.enter_async_context(trio.open_nursery())
        yield [
            await nursery.start(run_instance, client, f"i{n}", lease_s)
            for n, client in enumerate(clients)
        ]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def leader_and_follower(
    url: str,
    work: FakeWork,
    follower_work: FakeWork | None = None,
    lease_s: float = LEASE_S,
) -> AsyncIterator[tuple[Instance, Instance, Asker, Asker]]:
    """Instances ``a`` and ``b``: asker "one" on ``a`` leads ``work`` and waits in
    it, then asker "two" on ``b`` follows."""
    async with open_instances(url, lease_s=lease_s) as (a, b), trio.open_nursery() as nursery:
        one, two = a.asker("one"), b.asker("two")
        await lead_then_follow(nursery, work, one, two, follower_work=follower_work)
        yield a, b, one, two


async def test_identical_keys_on_two_instances_share_one_run(redis_url: str) -> None:
    """Work runs once; both instances get the same events in order and the same outcome."""
    work = FakeWork(pause_at=1)
    with trio.fail_after(5):
        async with open_instances(redis_url) as (a, b), trio.open_nursery() as nursery:
            one, two = a.asker("one"), b.asker("two")
            await nursery.start(one.ask, work)
            await nursery.start(two.ask, work)
            await wait_until(lambda: _stats(a, b, "led") + _stats(a, b, "followed") == 2, within=2)
            work.resume.set()
            await one.done.wait()
            await two.done.wait()
            assert work.calls == 1 and one.result is True and two.result is True
            assert one.events == two.events == [Route("direct"), *map(Token, TOKENS)]
            assert one.turn is not None and two.turn is not None
            assert one.turn.outcome() == two.turn.outcome()
            assert one.turn.outcome().completion_tokens == len(TOKENS)
            assert one.turn.text == two.turn.text == "".join(TOKENS)
            assert {one.turn.shared, two.turn.shared} == {False, True}
            # Finished: the lease is gone, so the next asker leads afresh.
            again = FakeWork()
            three = b.asker("three")
            await nursery.start(three.ask, again)
            await three.done.wait()
            assert again.calls == 1 and three.result is True and three.turn is not None
            assert not three.turn.shared


async def test_local_joins_share_without_another_claim(redis_url: str) -> None:
    """Two askers on one instance share its flight; the other instance follows once."""
    work = FakeWork(pause_at=1)
    with trio.fail_after(5):
        async with open_instances(redis_url) as (a, b), trio.open_nursery() as nursery:
            askers = [a.asker("a1"), a.asker("a2"), b.asker("b1"), b.asker("b2")]
            for asker in askers:
                await nursery.start(asker.ask, work)
            await wait_until(lambda: _stats(a, b, "led") + _stats(a, b, "followed") == 2, within=2)
            work.resume.set()
            for asker in askers:
                await asker.done.wait()
        assert work.calls == 1
        assert all(x.result is True and x.events == askers[0].events for x in askers)
        assert a.flights.statistics().started == b.flights.statistics().started == 1
        assert a.flights.statistics().joined == b.flights.statistics().joined == 1


async def test_late_follower_replays_from_the_start(redis_url: str) -> None:
    """A follower joining mid-answer gets every event from the first, then the rest live."""
    work = FakeWork(pause_at=3)
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, work) as (_a, _b, first, late):
            await wait_until(lambda: len(late.events) == 3, within=2)
            assert late.events == first.events
            work.resume.set()
            await late.done.wait()
            await first.done.wait()
        assert late.result is True and late.events == first.events
        assert len(late.events) == 1 + len(TOKENS) and work.calls == 1


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (UpstreamHTTPError("bad gateway", status=502, body="x"), "upstream_error", "bad gateway"),
        # A crash: what users read names the request whose log has it, not the bug.
        (ValueError("a secret detail"), "internal", "internal error; the log has it under one"),
    ],
    ids=["chatd_error", "crash"],
)
async def test_error_reaches_each_instance_as_its_own_copy(
    redis_url: str, error: Exception, code: str, message: str
) -> None:
    """A failed flight raises the same failure, as an exception of its own, on both sides."""
    work = FakeWork(pause_at=1, error=error)
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, work) as (a, b, one, two):
            await wait_until(lambda: _stats(a, b, "followed") == 1, within=2)
            work.resume.set()
            await one.done.wait()
            await two.done.wait()
    for asker in (one, two):
        assert isinstance(asker.result, ChatdError)
        assert (asker.result.code, asker.result.message) == (code, message)
    assert one.result is not two.result and work.calls == 1
    assert two.events == one.events


async def test_leader_lost_mid_answer_ends_followers_with_retryable_error(redis_url: str) -> None:
    """The leader dies after tokens were relayed: no silent restart, a retryable error."""
    work = FakeWork(pause_at=2)
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, work) as (a, b, _one, two):
            await wait_until(lambda: len(two.events) == 2, within=2)
            a.die()
            await two.done.wait()
    assert isinstance(two.result, UpstreamUnavailable)
    assert two.result.message == LOST and two.result.retry_after_ms
    assert work.calls == 1 and b.flights.statistics().lost == 1


async def test_leader_lost_before_any_event_is_taken_over(redis_url: str) -> None:
    """Nothing relayed yet: once the lease lapses the follower runs the work itself."""
    stuck, takeover = FakeWork(pause_at=0), FakeWork()
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, stuck, takeover) as (a, b, _one, two):
            await wait_until(lambda: _stats(a, b, "followed") == 1, within=2)
            a.die()
            started = trio.current_time()
            await two.done.wait()
            waited = trio.current_time() - started
    assert two.result is True and takeover.calls == 1
    assert two.events == [Route("direct"), *map(Token, TOKENS)]
    assert two.turn is not None and not two.turn.shared
    assert b.flights.statistics().took_over == 1
    assert waited >= LEASE_S / 2  # it waited for the lease to lapse


async def test_leader_shut_down_hands_over_at_once(redis_url: str) -> None:
    """A leader cancelled cleanly says so: the follower takes over without waiting out the lease."""
    stuck, takeover = FakeWork(pause_at=0), FakeWork()
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, stuck, takeover, lease_s=10) as (a, b, _, two):
            await wait_until(lambda: _stats(a, b, "followed") == 1, within=2)
            a.scope.cancel()
            with trio.fail_after(2):  # far less than the 10 s lease
                await two.done.wait()
    assert two.result is True and takeover.calls == 1 and stuck.cancelled


async def test_leader_keeps_going_while_another_instance_follows(redis_url: str) -> None:
    """The leader's askers all leave: it goes on for the follower, then stops once it leaves."""
    work = FakeWork(pause_at=1)
    with trio.fail_after(5):
        async with leader_and_follower(redis_url, work) as (a, b, one, two):
            await wait_until(lambda: len(two.events) == 1, within=2)
            one.scope.cancel()
            await one.done.wait()
            await trio.sleep(LEASE_S)  # several renewals: it sees the follower each time
            assert not work.cancelled
            work.resume.set()
            await two.done.wait()
            assert two.result is True and two.events == [Route("direct"), *map(Token, TOKENS)]
            await wait_until(lambda: a.flights.statistics().in_flight == 0, within=1)

            stopped = FakeWork(pause_at=1)
            three, four = a.asker("three"), b.asker("four")
            async with trio.open_nursery() as nursery:
                await lead_then_follow(nursery, stopped, three, four)
                await wait_until(lambda: len(four.events) == 1, within=2)
                three.scope.cancel()
                four.scope.cancel()
                await wait_until(lambda: stopped.cancelled, within=LEASE_S * 2)
                assert a.flights.statistics().in_flight == 0


async def test_leader_alone_stops_at_once(redis_url: str) -> None:
    """With no follower anywhere, the last asker leaving cancels the work without a wait."""
    work = FakeWork(pause_at=1)
    with trio.fail_after(5):
        async with open_instances(redis_url, lease_s=10) as (a, _b), trio.open_nursery() as n:
            one = a.asker("one")
            await n.start(one.ask, work)
            await work.paused.wait()
            one.scope.cancel()
            # Well before the next renewal (lease_s / 3): it did not wait for one.
            await wait_until(lambda: work.cancelled, within=2)


async def test_divergence_reaches_remote_followers(redis_url: str) -> None:
    """An unshareable route on the leader makes the other instance's askers answer alone."""
    work = FakeWork(pause_at=0, diverge=True)
    with trio.fail_after(5):
        async with open_instances(redis_url) as (a, b), trio.open_nursery() as nursery:
            one, two, three = a.asker("one"), b.asker("two"), b.asker("three")
            await lead_then_follow(nursery, work, one, two, three)
            await wait_until(lambda: _stats(a, b, "followed") == 1, within=2)
            work.resume.set()
            await two.done.wait()
            await three.done.wait()
            await one.done.wait()
    assert two.result is False and three.result is False  # its creator too
    assert two.events == three.events == []
    assert one.result is True and one.events == [Route("direct"), *map(Token, TOKENS)]
    assert b.flights.statistics().diverged == 1 and work.calls == 1


async def test_redis_down_flights_stay_local(redis_server: RedisServer) -> None:
    """Redis stopped: each instance shares its own flights, and no chat fails."""
    with trio.fail_after(10):
        async with open_instances(redis_server.url) as (a, b), trio.open_nursery() as nursery:
            redis_server.stop()
            work = FakeWork(pause_at=1)
            askers = [a.asker("a1"), a.asker("a2"), b.asker("b1")]
            for asker in askers:
                await nursery.start(asker.ask, work)
            await wait_until(lambda: _stats(a, b, "local_only") == 2, within=5)
            work.resume.set()
            for asker in askers:
                await asker.done.wait()
    assert all(x.result is True for x in askers)
    assert all(x.events == [Route("direct"), *map(Token, TOKENS)] for x in askers)
    assert work.calls == 2  # once per instance


async def test_redis_lost_mid_flight(redis_server: RedisServer) -> None:
    """Redis dies mid-answer: the leader finishes locally; a follower that relayed
    part of the answer ends with a retryable error rather than a restart."""
    work = FakeWork(pause_at=2)
    with trio.fail_after(10):
        async with leader_and_follower(redis_server.url, work) as (_a, _b, one, two):
            await wait_until(lambda: len(two.events) == 2, within=2)
            redis_server.stop()
            await two.done.wait()
            work.resume.set()
            await one.done.wait()
    assert one.result is True and one.events == [Route("direct"), *map(Token, TOKENS)]
    assert isinstance(two.result, UpstreamUnavailable) and two.result.retry_after_ms


def _stats(a: Instance, b: Instance, name: str) -> int:
    return sum(getattr(i.flights.statistics(), name) for i in (a, b))
