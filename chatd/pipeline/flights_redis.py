"""Flights across instances: identical questions on different chatd processes
share one LLM call, through Redis.

:class:`RedisFlights` is a :class:`~chatd.pipeline.flights.Flights`: in one
process nothing changes (a join to a local flight never touches Redis). What
it adds is the work a new local flight does. It *claims* the key: the first
instance takes the lease and *leads*, running the work as before while it
mirrors the flight's events into a stream; any other instance *follows*,
relaying that stream from its start into its local flight, which its local
subscribers share as usual. The keys, the scripts and the stream's records
are in :mod:`chatd.pipeline.flight_scripts`. Queue positions are not
mirrored: they are advisory and say nothing of another instance.

The leader renews its lease every ``lease_s / 3`` with a compare-and-extend
script, and ends by writing its end record and deleting the lease in one
script. It holds one subscription of its own flight (so the last local
subscriber leaving does not stop it) until the renewal script, told nobody is
left locally, finds no live follower and deletes the lease in the same atomic
step: then it lets go and the flight is cancelled as before. A follower that
comes later finds no lease and leads afresh. A remote follower leaving
removes itself from the zset, so the leader stops at its next renewal.

A follower whose leader is lost (its lease lapsed unrenewed, or ``abandoned``)
claims again: it takes the lease and runs the work itself, or follows whoever
did, transparently if it relayed nothing yet. If its subscribers already have
part of the answer it does not restart mid-answer: they get a retryable
:class:`UpstreamUnavailable` ("the instance answering this was lost").

Redis failing (breaker open, unreachable) never fails a chat that has not
started: a claim that fails runs the work locally; a leader that cannot write
goes on locally (its followers lose it as above); a follower that cannot read
answers locally if it relayed nothing, or else ends with that same retryable
error. The first failure is logged as a warning, the recovery too.

Reading: one task per process multiplexes every followed stream
(:mod:`chatd.pipeline.flight_reader`), so following costs one thread per
process however many flights are followed.
"""

from __future__ import annotations

import collections
import functools
import math
import secrets
from collections.abc import Callable

import attrs
import orjson
import structlog
import trio
from redis.commands.core import Script

from chatd.exceptions import ChatdError, DeadlineExceeded, UpstreamUnavailable, first_leaf
from chatd.pipeline.codec import (
    error_from_json,
    error_to_json,
    event_from_json,
    event_to_json,
    outcome_from_json,
    outcome_to_json,
)
from chatd.pipeline.events import Queued
from chatd.pipeline.flight_reader import Inbox, StreamReader, evaluate
from chatd.pipeline.flight_scripts import (
    ABANDONED,
    DIVERGED,
    RENEW_ABANDONED,
    RENEW_LOST,
    STREAM_MAXLEN,
    record,
    register,
    zrem,
)
from chatd.pipeline.flights import Flight, Flights, FlightsStatistics, Work
from chatd.pipeline.turn import Turn
from chatd.resilience.supervisor import Supervisor
from chatd.stores.redis_client import RedisClient

__all__ = ["RedisFlights", "RedisFlightsStatistics"]

log = structlog.get_logger("chatd.flights")

LOST = "the instance answering this was lost"
LOST_RETRY_MS = 1000
_MAX_CLAIMS = 3


@attrs.frozen
class RedisFlightsStatistics(FlightsStatistics):
    """The local counts, and how flights went across instances.

    ``subscribers`` includes a leader's own hold on a flight that other
    instances may follow.
    """

    led: int
    followed: int
    took_over: int
    lost: int
    local_only: int


class _AnswerAlone(ChatdError):
    """Not an error: this instance's subscribers must answer alone."""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@attrs.define(eq=False)
class _Lead:
    """What a leader knows of its flight in Redis."""

    token: str
    lease: str
    stream: str
    followers: str
    sent: int = 0
    """Events of the flight looked at (written, or skipped as queue positions)."""
    seq: int = 0
    """Events written to the stream."""
    held: bool = True
    closed: bool = False
    diverged: bool = False
    poked: trio.Event = attrs.field(factory=trio.Event)

    def poke(self) -> None:
        self.poked.set()


@attrs.define
class RedisFlights(Flights):
    """Flights shared across instances through Redis (see the module docstring).

    Built as :class:`Flights` is, plus the Redis client, the lease
    (``redis.flight_lease_s``) and a name for this instance; it starts its
    stream reader in the nursery it is handed.
    """

    redis: RedisClient = attrs.field(kw_only=True)
    lease_s: float = attrs.field(default=5.0, kw_only=True)
    instance: str = attrs.field(factory=lambda: secrets.token_hex(4), kw_only=True)
    """This process's name in tokens, for the logs and for Redis."""
    block_ms: int = attrs.field(default=50, kw_only=True)
    mirror_interval_s: float = attrs.field(default=0.05, kw_only=True)
    """A leader writes its new events to Redis at most this often (the first at once)."""
    ended_keep_s: float = attrs.field(default=30.0, kw_only=True)
    """How long a finished flight's stream is kept, for followers still reading it."""
    supervisor: Supervisor = attrs.field(factory=Supervisor, kw_only=True)
    """Runs the stream reader, restarting it if it fails."""
    _leads: dict[Flight, _Lead] = attrs.field(factory=dict, init=False)
    _counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _redis_down: bool = attrs.field(default=False, init=False)
    _scripts: dict[str, Script] = attrs.field(factory=dict, init=False)
    _reader: StreamReader = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._scripts = register(self.redis.redis)
        self._reader = StreamReader(
            self.redis.dedicated(),
            self._scripts["heartbeat"],
            self.block_ms,
            self.lease_s / 3,
            _ms(self.lease_s),
            self._redis_failed,
        )
        self.nursery.start_soon(
            self.supervisor.run, "flights_reader", self._reader.run, name="flights stream reader"
        )

    def join(self, key: str, make_turn: Callable[[], Turn], work: Work) -> tuple[Flight, bool]:
        """As :meth:`Flights.join`; a new flight leads or follows across instances."""
        return super().join(key, make_turn, functools.partial(self._share, work))

    def leave(self, flight: Flight, *, created: bool) -> None:
        """As :meth:`Flights.leave`; a leader left with only its hold asks Redis
        at once whether any other instance still follows."""
        super().leave(flight, created=created)
        lead = self._leads.get(flight)
        if lead is not None and lead.held and flight.subscribers == 1:
            lead.poke()

    async def follow(self, flight: Flight, turn: Turn, *, created: bool) -> bool:
        """As :meth:`Flights.follow`; an answer relayed from another instance is shared."""
        try:
            followed = await super().follow(flight, turn, created=created)
        except _AnswerAlone:
            return False
        if flight.turn.shared:
            turn.shared = True
        return followed

    def statistics(self) -> RedisFlightsStatistics:
        """The local counts, and leads, follows, takeovers and losses."""
        local = super().statistics()
        c = self._counts
        return RedisFlightsStatistics(
            **attrs.asdict(local),
            led=c["led"],
            followed=c["followed"],
            took_over=c["took_over"],
            lost=c["lost"],
            local_only=c["local_only"],
        )

    def _unshare(self, flight: Flight) -> None:
        lead = self._leads.get(flight)
        if lead is not None and not lead.closed:
            lead.diverged = True  # the mirror writes ``diverged`` and nothing more
            lead.poke()
        # The hold is not an asker: without it, divergence is counted as in memory.
        held = lead is not None and lead.held
        flight.subscribers -= held
        try:
            super()._unshare(flight)
        finally:
            flight.subscribers += held

    def _key(self, key: str, *parts: str) -> str:
        return self.redis.key("flight", key, *parts)

    async def _share(self, work: Work, flight: Flight) -> None:
        """A new flight's work: lead it, follow it, take it over, or do it locally."""
        token = f"{self.instance}/{secrets.token_hex(6)}"
        followed = False
        for _ in range(_MAX_CLAIMS):
            leader = await self._claim(flight.key, token)
            if leader is None:
                break
            if leader == token:
                self._counts["took_over" if followed else "led"] += 1
                if followed:
                    log.info("flight taken over", key=flight.key[:12])
                await self._lead(flight, work, token)
                return
            self._counts["followed"] += 1
            followed = True
            flight.turn.shared = True  # what reaches its subscribers comes from elsewhere
            if await self._relay(flight, leader, token):
                return
            flight.turn.shared = False
            self._counts["lost"] += 1
            if flight.events:
                raise UpstreamUnavailable(LOST, retry_after_ms=LOST_RETRY_MS)
        self._counts["local_only"] += 1
        await work(flight)

    async def _claim(self, key: str, token: str) -> str | None:
        """Take the lease or register as a follower; the leader's token, or
        ``None`` if Redis cannot be used now."""
        args = [token, _ms(self.lease_s), _ms(self.lease_s)]
        try:
            leader = await self.redis.call(evaluate, self._scripts["claim"], [self._key(key)], args)
        except ChatdError as exc:
            self._redis_failed(exc)
            return None
        if self._redis_down:
            self._redis_down = False
            log.info("redis is back: flights are shared across instances again")
        return leader.decode() if isinstance(leader, bytes) else str(leader)

    def _redis_failed(self, exc: ChatdError) -> None:
        if not self._redis_down:
            self._redis_down = True
            log.warning(
                "redis failed: flights are shared only within this instance", error=str(exc)
            )

    # -- leading -------------------------------------------------------------

    async def _lead(self, flight: Flight, work: Work, token: str) -> None:
        """Run the work here, mirroring its events, renewing the lease, then the end."""
        stream = self._key(flight.key, token)
        lead = _Lead(token, self._key(flight.key), stream, stream + ":followers")
        self._leads[flight] = lead
        flight.subscribers += 1  # the hold, for followers elsewhere
        end = ABANDONED
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease, flight, lead)
                nursery.start_soon(self._mirror, flight, lead)
                await work(flight)
                nursery.cancel_scope.cancel()
            # Diverged, followers elsewhere answer alone, even if the mirror
            # never ran between the divergence and the end.
            end = (
                DIVERGED
                if lead.diverged
                else record("outcome", outcome_to_json(flight.turn.outcome()))
            )
        except BaseException as exc:
            end = self._end_of(flight, lead, first_leaf(exc))
            raise
        finally:
            del self._leads[flight]
            if not lead.closed:
                with trio.move_on_after(self.lease_s) as cleanup:
                    cleanup.shield = True
                    await self._publish(flight, lead, end)
            self._close(flight, lead)

    def _end_of(self, flight: Flight, lead: _Lead, error: BaseException) -> bytes:
        if lead.diverged:
            return DIVERGED
        if not isinstance(error, trio.Cancelled):
            return record("error", error_to_json(error))
        if trio.current_time() >= flight.scope.deadline:
            stopped = DeadlineExceeded("the shared answer was stopped before it finished")
            return record("error", error_to_json(stopped))
        return ABANDONED  # shutting down: a follower takes it over

    async def _keep_lease(self, flight: Flight, lead: _Lead) -> None:
        """Renew the lease; let go when nobody here or elsewhere follows."""
        while not lead.closed:
            with trio.move_on_after(self.lease_s / 3):
                await lead.poked.wait()
            lead.poked = trio.Event()
            if lead.closed:
                return
            alone = flight.subscribers <= int(lead.held)
            keys = [lead.lease, lead.followers, lead.stream]
            args = [lead.token, _ms(self.lease_s), _ms(2 * self.lease_s), int(alone)]
            try:
                state = await self.redis.call(evaluate, self._scripts["renew"], keys, args)
            except ChatdError as exc:
                self._redis_failed(exc)
                self._close(flight, lead)
                return
            if state == RENEW_LOST:
                log.warning("flight lease lost: answering locally only", key=flight.key[:12])
            if state in (RENEW_LOST, RENEW_ABANDONED):
                self._close(flight, lead)

    async def _mirror(self, flight: Flight, lead: _Lead) -> None:
        """Write the flight's events to its stream as they come, in batches: the
        first at once, then at most one write per ``mirror_interval_s`` (each is
        a thread hop and a script; one per token cost more than the answer)."""
        while not lead.closed:
            if lead.diverged:
                await self._publish(flight, lead, DIVERGED)
            elif lead.sent < len(flight.events):
                await self._publish(flight, lead, None)
                await trio.sleep(self.mirror_interval_s)
            else:
                await flight.changed()

    async def _publish(self, flight: Flight, lead: _Lead, end: bytes | None) -> None:
        """Write the events not yet written (none once diverged), and ``end``.

        An end, a lost lease or a Redis failure closes the lead.
        """
        upto = len(flight.events)
        # Followers on other instances read what is written: it counts as taken.
        flight.reached(upto)
        events = [] if lead.diverged else flight.events[lead.sent : upto]
        batch = [event_to_json(e) for e in events if not isinstance(e, Queued)]
        records = []
        try:
            if batch:
                records.append(orjson.dumps({"kind": "events", "seq": lead.seq, "events": batch}))
        except TypeError as exc:  # orjson refuses it (a lone surrogate): answer here only
            log.error("flight event cannot be shared", key=flight.key[:12], exc_info=exc)
            self._close(flight, lead)
            return
        if end is not None:
            records.append(end)
        if records:
            keep = self.ended_keep_s if end is not None else 2 * self.lease_s
            args = [lead.token, STREAM_MAXLEN, _ms(keep), int(end is not None), *records]
            try:
                owned = await self.redis.call(
                    evaluate, self._scripts["publish"], [lead.lease, lead.stream], args
                )
            except ChatdError as exc:
                self._redis_failed(exc)
                self._close(flight, lead)
                return
            if not owned:
                log.warning("flight lease lost: answering locally only", key=flight.key[:12])
                self._close(flight, lead)
                return
        lead.sent, lead.seq = upto, lead.seq + len(batch)
        if end is not None:
            self._close(flight, lead)

    def _close(self, flight: Flight, lead: _Lead) -> None:
        """Stop sharing through Redis; let go of the hold (which may end the flight)."""
        lead.closed = True
        lead.poke()
        if lead.held:
            lead.held = False
            self.leave(flight, created=False)

    # -- following -----------------------------------------------------------

    async def _relay(self, flight: Flight, leader: str, token: str) -> bool:
        """Relay the leader's stream into ``flight``: ``True`` once it ended,
        ``False`` if the leader was lost first. Raises the flight's error."""
        stream = self._key(flight.key, leader)
        inbox = Inbox(stream, self._key(flight.key), stream + ":followers", leader, token)
        self._reader.watch(inbox)
        ended = False
        try:
            while True:
                for data in inbox.take():
                    record = orjson.loads(data)
                    kind = record["kind"]
                    if kind == "events":
                        if record["seq"] != len(flight.events):  # trimmed: the start is gone
                            if flight.events:
                                return False
                            ended = True
                            raise _AnswerAlone("the start of the shared answer is gone")
                        for event in record["events"]:
                            flight.publish_nowait(event_from_json(event))
                        continue
                    ended = True
                    if kind == "outcome":
                        flight.turn.adopt(outcome_from_json(record["outcome"]))
                        return True
                    if kind == "error":
                        raise error_from_json(record["error"])
                    if kind == "diverged":
                        self._diverged += 1
                        raise _AnswerAlone("the shared answer stopped being shared")
                    return False  # abandoned
                if inbox.lost:
                    ended = True
                    return False
                await inbox.changed()
        finally:
            self._reader.unwatch(inbox)
            if not ended:  # our subscribers left: tell the leader at once
                with trio.move_on_after(self.lease_s) as cleanup:
                    cleanup.shield = True
                    try:
                        await self.redis.call(zrem, inbox.followers, token)
                    except ChatdError as exc:
                        self._redis_failed(exc)
