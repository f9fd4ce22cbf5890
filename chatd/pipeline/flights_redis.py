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

The leader (:mod:`chatd.pipeline.flight_lead`) renews its lease every
``lease_s / 3`` with a compare-and-extend script, holds its flight while
anyone here or elsewhere follows it, and ends by writing its end record and
deleting the lease in one script. A follower that
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
import secrets
from collections.abc import Callable

import attrs
import orjson
import structlog
import trio
from redis.commands.core import Script

from chatd.exceptions import ChatdError, UpstreamUnavailable
from chatd.pipeline.codec import event_from_json, failure_from_json, outcome_from_json
from chatd.pipeline.flight_lead import Lead, LeadSettings, ms
from chatd.pipeline.flight_reader import Inbox, StreamReader, evaluate
from chatd.pipeline.flight_scripts import register, zrem
from chatd.pipeline.flights import AnswerAlone, Flight, Flights, FlightsStatistics, Work
from chatd.pipeline.turn import Turn
from chatd.resilience.supervisor import Supervisor
from chatd.stores.redis.client import RedisClient

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
    _leads: dict[Flight, Lead] = attrs.field(factory=dict, init=False)
    _counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _redis_down: bool = attrs.field(default=False, init=False)
    _scripts: dict[str, Script] = attrs.field(factory=dict, init=False)
    _reader: StreamReader = attrs.field(init=False)
    _lead_with: LeadSettings = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._scripts = register(self.redis.redis)
        self._lead_with = LeadSettings(
            self.redis,
            self._scripts,
            self.lease_s,
            self.mirror_interval_s,
            self.ended_keep_s,
            self._redis_failed,
            functools.partial(self.leave, created=False),
        )
        self._reader = StreamReader(
            self.redis.dedicated(),
            self._scripts["heartbeat"],
            self.block_ms,
            self.lease_s / 3,
            ms(self.lease_s),
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
        followed = await super().follow(flight, turn, created=created)
        if followed and flight.turn.shared:
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
        args = [token, ms(self.lease_s), ms(self.lease_s)]
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
        """Run the work here as the flight's leader (:class:`Lead`)."""
        lease, stream = self._key(flight.key), self._key(flight.key, token)
        lead = Lead(flight, token, lease, stream, self._lead_with)
        self._leads[flight] = lead
        await lead.run(work, functools.partial(self._leads.pop, flight))

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
                            raise AnswerAlone("the start of the shared answer is gone")
                        for event in record["events"]:
                            flight.publish_nowait(event_from_json(event))
                        continue
                    ended = True
                    if kind == "outcome":
                        flight.turn.adopt(outcome_from_json(record["outcome"]))
                        return True
                    if kind == "error":
                        raise failure_from_json(record["error"]).exception()
                    if kind == "diverged":
                        self._diverged += 1
                        raise AnswerAlone("the shared answer stopped being shared")
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
