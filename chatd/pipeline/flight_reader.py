"""The one reader per process of the Redis Streams that flights follow.

A follower's flight (:mod:`chatd.pipeline.flights_redis`) hands its stream to
:class:`StreamReader` as an :class:`Inbox`. One task multiplexes ``XREAD
BLOCK`` over every followed stream, on a connection and a thread of its own,
and every ``beat_s`` renews all follower registrations and checks all leases
in one script. So following costs one thread per process however many
flights are followed, and never holds a connection that the request path
waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import attrs
import redis
import trio
from redis.commands.core import Script

from chatd.exceptions import ChatdError
from chatd.stores.redis.client import RedisClient

__all__ = ["READ_COUNT", "Inbox", "StreamReader", "evaluate"]

READ_COUNT = 256
"""Records read per stream per XREAD."""


def evaluate(client: redis.Redis, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    return script(keys=keys, args=args, client=client)


@attrs.define(eq=False)
class Inbox:
    """One followed stream, as the reader hands it to its follower."""

    stream: str
    lease: str
    followers: str
    leader: str
    token: str
    last_id: bytes = b"0-0"
    records: list[bytes] = attrs.field(factory=list)
    ending: bool = False
    """The lease is no longer the leader's: lost once the stream is read to its end."""
    lost: bool = False
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def take(self) -> list[bytes]:
        records, self.records = self.records, []
        return records

    def wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


@attrs.define(eq=False)
class StreamReader:
    """The process's one reader of followed streams (see the module docstring)."""

    client: RedisClient
    heartbeat: Script
    block_ms: int
    beat_s: float
    ttl_ms: int
    on_failure: Callable[[ChatdError], None]
    _inboxes: dict[str, Inbox] = attrs.field(factory=dict, init=False)
    _wanted: trio.Event = attrs.field(factory=trio.Event, init=False)

    def watch(self, inbox: Inbox) -> None:
        self._inboxes[inbox.stream] = inbox
        self._wanted.set()

    def unwatch(self, inbox: Inbox) -> None:
        if self._inboxes.get(inbox.stream) is inbox:
            del self._inboxes[inbox.stream]

    async def run(self) -> NoReturn:
        beat_at = trio.current_time() + self.beat_s
        try:
            while True:
                if not self._inboxes:
                    await self._wanted.wait()
                    self._wanted = trio.Event()
                    continue
                inboxes = list(self._inboxes.values())
                try:
                    if trio.current_time() >= beat_at:
                        beat_at = trio.current_time() + self.beat_s
                        await self._beat(inboxes)
                    streams = {i.stream: i.last_id for i in inboxes}
                    replies = await self.client.call(_xread, streams, self.block_ms)
                except ChatdError as exc:
                    self.on_failure(exc)
                    for inbox in inboxes:
                        inbox.lost = True
                        inbox.wake()
                    await trio.sleep(self.block_ms / 1000)  # its followers unwatch meanwhile
                    continue
                self._deliver(inboxes, replies)
        finally:
            self.client.redis.connection_pool.disconnect()

    async def _beat(self, inboxes: list[Inbox]) -> None:
        """Renew every registration; note the streams whose leader is gone."""
        keys = [k for i in inboxes for k in (i.lease, i.followers)]
        args = [self.ttl_ms, *(a for i in inboxes for a in (i.leader, i.token))]
        alive = await self.client.call(evaluate, self.heartbeat, keys, args)
        for inbox, ok in zip(inboxes, alive, strict=True):
            inbox.ending = inbox.ending or not ok

    def _deliver(self, inboxes: list[Inbox], replies: Any) -> None:
        read: dict[str, int] = {}
        for name, entries in replies or ():
            inbox = self._inboxes.get(name.decode())
            if inbox is None:
                continue
            for entry_id, fields in entries:
                inbox.records.append(fields[b"r"])
                inbox.last_id = entry_id
            read[inbox.stream] = len(entries)
            inbox.wake()
        # An ending leader wrote its end before its lease went: a read that came
        # back short after the heartbeat saw that has everything there will be.
        for inbox in inboxes:
            if inbox.ending and read.get(inbox.stream, 0) < READ_COUNT:
                inbox.lost = True
                inbox.wake()


def _xread(client: redis.Redis, streams: dict[str, bytes], block_ms: int) -> Any:
    return client.xread(streams, count=READ_COUNT, block=block_ms)  # type: ignore[arg-type]
