"""Leading a shared flight (:mod:`chatd.pipeline.flights_redis`): the work runs
here while its events are mirrored into the flight's stream, the lease is
renewed, and the end is written when it finishes.

A :class:`Lead` holds one subscription of its flight (so the last local
subscriber leaving does not stop it) until the renewal script, told nobody is
left locally, finds no live follower and deletes the lease in the same atomic
step: then it lets go, and the flight is cancelled as any other. Any failure
to write (Redis down, the lease lost, an event orjson refuses) closes the
lead and the flight goes on locally.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import orjson
import structlog
import trio
from redis.commands.core import Script

from chatd.exceptions import ChatdError, Failure, first_leaf
from chatd.pipeline.codec import event_to_json, failure_to_json, outcome_to_json
from chatd.pipeline.events import Queued
from chatd.pipeline.flight_reader import evaluate
from chatd.pipeline.flight_scripts import (
    ABANDONED,
    DIVERGED,
    RENEW_ABANDONED,
    RENEW_LOST,
    STREAM_MAXLEN,
    record,
)
from chatd.pipeline.flights import STOPPED, Flight, Work
from chatd.stores.redis.client import RedisClient

__all__ = ["Lead", "LeadSettings", "ms"]

log = structlog.get_logger("chatd.flights")


def ms(seconds: float) -> int:
    """Whole milliseconds, at least one, for Redis."""
    return max(1, math.ceil(seconds * 1000))


@attrs.frozen
class LeadSettings:
    """What every lead of one :class:`~chatd.pipeline.flights_redis.RedisFlights` shares."""

    redis: RedisClient
    scripts: dict[str, Script]
    lease_s: float
    mirror_interval_s: float
    ended_keep_s: float
    redis_failed: Callable[[ChatdError], None]
    let_go: Callable[[Flight], None]
    """Drop the lead's hold on its flight (which may end the flight)."""


@attrs.define(eq=False)
class Lead:
    """What a leader knows of its flight in Redis, and the leading itself."""

    flight: Flight
    token: str
    lease: str
    stream: str
    settings: LeadSettings
    sent: int = 0
    """Events of the flight looked at (written, or skipped as queue positions)."""
    seq: int = 0
    """Events written to the stream."""
    held: bool = True
    closed: bool = False
    diverged: bool = False
    poked: trio.Event = attrs.field(factory=trio.Event)

    @property
    def followers(self) -> str:
        """The zset of the instances following this lead."""
        return self.stream + ":followers"

    def poke(self) -> None:
        """Renew now (someone left, or the lead diverged or closed)."""
        self.poked.set()

    async def run(self, work: Work, forget: Callable[[], object]) -> None:
        """Run the work here, mirroring its events and renewing the lease, then
        write the end; ``forget`` is called as the work ends, before the end is
        written."""
        self.flight.subscribers += 1  # the hold, for followers elsewhere
        end = ABANDONED
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease)
                nursery.start_soon(self._mirror)
                await work(self.flight)
                nursery.cancel_scope.cancel()
            # Diverged, followers elsewhere answer alone, even if the mirror
            # never ran between the divergence and the end.
            end = (
                DIVERGED
                if self.diverged
                else record("outcome", outcome_to_json(self.flight.turn.outcome()))
            )
        except BaseException as exc:
            end = self._end_of(first_leaf(exc))
            raise
        finally:
            forget()
            if not self.closed:
                with trio.move_on_after(self.settings.lease_s) as cleanup:
                    cleanup.shield = True
                    await self._publish(end)
            self.close()

    def close(self) -> None:
        """Stop sharing through Redis; let go of the hold (which may end the flight)."""
        self.closed = True
        self.poke()
        if self.held:
            self.held = False
            self.settings.let_go(self.flight)

    def _end_of(self, error: BaseException) -> bytes:
        if self.diverged:
            return DIVERGED
        if not isinstance(error, trio.Cancelled):
            failure = Failure.of(error, self.flight.turn.context.request_id)
            return record("error", failure_to_json(failure))
        if trio.current_time() >= self.flight.scope.deadline:
            return record("error", failure_to_json(STOPPED))
        return ABANDONED  # shutting down: a follower takes it over

    async def _keep_lease(self) -> None:
        """Renew the lease; let go when nobody here or elsewhere follows."""
        lease_s = self.settings.lease_s
        while not self.closed:
            with trio.move_on_after(lease_s / 3):
                await self.poked.wait()
            self.poked = trio.Event()
            if self.closed:
                return
            alone = self.flight.subscribers <= int(self.held)
            keys = [self.lease, self.followers, self.stream]
            args = [self.token, ms(lease_s), ms(2 * lease_s), int(alone)]
            state = await self._script("renew", keys, args)
            if state == RENEW_LOST:
                log.warning("flight lease lost: answering locally only", key=self.flight.key[:12])
            if state in (RENEW_LOST, RENEW_ABANDONED):
                self.close()

    async def _mirror(self) -> None:
        """Write the flight's events to its stream as they come, in batches: the
        first at once, then at most one write per ``mirror_interval_s`` (each is
        a thread hop and a script; one per token cost more than the answer)."""
        while not self.closed:
            if self.diverged:
                await self._publish(DIVERGED)
            elif self.sent < len(self.flight.events):
                await self._publish(None)
                await trio.sleep(self.settings.mirror_interval_s)
            else:
                await self.flight.changed()

    async def _publish(self, end: bytes | None) -> None:
        """Write the events not yet written (none once diverged), and ``end``.

        An end, a lost lease or a Redis failure closes the lead.
        """
        flight = self.flight
        upto = len(flight.events)
        # Followers on other instances read what is written: it counts as taken.
        flight.reached(upto)
        events = [] if self.diverged else flight.events[self.sent : upto]
        batch = [event_to_json(e) for e in events if not isinstance(e, Queued)]
        records = []
        try:
            if batch:
                records.append(orjson.dumps({"kind": "events", "seq": self.seq, "events": batch}))
        except TypeError as exc:  # orjson refuses it (a lone surrogate): answer here only
            log.error("flight event cannot be shared", key=flight.key[:12], exc_info=exc)
            self.close()
            return
        if end is not None:
            records.append(end)
        if records:
            keep = self.settings.ended_keep_s if end is not None else 2 * self.settings.lease_s
            args = [self.token, STREAM_MAXLEN, ms(keep), int(end is not None), *records]
            owned = await self._script("publish", [self.lease, self.stream], args)
            if owned is None:
                return
            if not owned:
                log.warning("flight lease lost: answering locally only", key=flight.key[:12])
                self.close()
                return
        self.sent, self.seq = upto, self.seq + len(batch)
        if end is not None:
            self.close()

    async def _script(self, name: str, keys: list[str], args: list[object]) -> object:
        """Run one of the scripts; ``None``, with the lead closed, if Redis failed."""
        try:
            return await self.settings.redis.call(evaluate, self.settings.scripts[name], keys, args)
        except ChatdError as exc:
            self.settings.redis_failed(exc)
            self.close()
            return None
