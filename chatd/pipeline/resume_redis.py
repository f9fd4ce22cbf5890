"""Resumable requests across instances, through Redis.

With Redis configured, a resumable request's journal is mirrored to a Redis
Stream (``resume:REQUEST_ID``, one entry per event: its ``seq`` and its
bytes from :mod:`chatd.pipeline.codec`), written at most every 50 ms, with
the client that may resume it (``resume:REQUEST_ID:meta``). A client that
comes back on another instance reads the stream from its ``after`` and then
live, through a connection of its own (a blocking read must never hold one
that requests wait for). The request keeps running where it began; the two
instances speak through two small keys the owner reads every half second
while nobody follows the request locally:

- ``resume:REQUEST_ID:follower``, refreshed by a remote follower (a lease of
  2 s): someone follows, so the grace does not run out;
- ``resume:REQUEST_ID:cancel``: the client cancelled it over there.

Everything expires on its own a grace after the request ends.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from chatd.pipeline.codec import decode_event, encode_event
from chatd.pipeline.events import Event, is_terminal

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured
    from redis import Redis

    from chatd.stores.redis.client import RedisClient

__all__ = ["POLL_S", "Mirrored", "RemoteJournal", "mirror", "open_remote", "poll_owner"]

POLL_S = 0.5
"""How often an owner that nobody here follows asks Redis for a follower elsewhere."""
FLUSH_S = 0.05
"""How often a journal's new events are written to its stream."""
LEASE_MS = 2000
"""How long a remote follower's last sign of life counts."""


class Mirrored(Protocol):
    """What is read of a journal (:class:`chatd.pipeline.resume.Journal`) to
    mirror it to Redis and to poll for its followers elsewhere."""

    client: str
    grace: float
    request_id: str | None
    events: list[Event]
    finished: bool

    async def changed(self) -> None:
        """Return once an event was added or the journal finished."""
        ...


def _keys(redis: RedisClient, request_id: str) -> tuple[str, str, str, str]:
    base = redis.key("resume", request_id)
    return base, base + ":meta", base + ":follower", base + ":cancel"


async def mirror(journal: Mirrored, redis: RedisClient) -> None:
    """Write ``journal``'s events to its stream as they come, to the end."""
    sent = 0
    while True:
        while len(journal.events) == sent and not journal.finished:
            await journal.changed()
        batch = journal.events[sent:]
        if batch:
            await redis.call(_append, _keys(redis, str(journal.request_id)), journal, sent, batch)
            sent += len(batch)
        if journal.finished and sent == len(journal.events):
            return
        await trio.sleep(FLUSH_S)


def _append(
    r: Redis, keys: tuple[str, str, str, str], journal: Mirrored, sent: int, batch: list[Event]
) -> None:
    stream, meta, _, _ = keys
    ttl_ms = int((journal.grace + (0 if journal.finished else 600)) * 1000)
    pipe = r.pipeline(transaction=False)
    if sent == 0:
        pipe.hset(meta, mapping={"client": journal.client})
    for seq, event in enumerate(batch, start=sent + 1):
        pipe.xadd(stream, {"seq": seq, "event": encode_event(event)})
    pipe.pexpire(stream, ttl_ms)
    pipe.pexpire(meta, ttl_ms)
    pipe.execute()


async def poll_owner(journal: Mirrored, redis: RedisClient) -> tuple[bool, bool]:
    """(someone follows remotely, the client cancelled remotely)."""
    _, _, follower, cancel = _keys(redis, str(journal.request_id))

    def read(r: Redis) -> tuple[bool, bool]:
        followed, cancelled = r.exists(follower), r.exists(cancel)
        return bool(followed), bool(cancelled)

    return await redis.call(read)


@attrs.define(eq=False)
class RemoteJournal:
    """A journal on another instance, read from its stream."""

    redis: RedisClient
    reader: RedisClient
    request_id: str
    cancel_requested: bool = False

    def cancel(self) -> None:
        """Ask the owner to cancel the request (sent with the next read)."""
        self.cancel_requested = True

    async def follow(self, after: int) -> AsyncGenerator[tuple[int, Event], None]:
        """The events after ``after``, then live, to the terminal event (or
        until the stream is gone: the owner's instance lost it)."""
        stream, _, follower, cancel = _keys(self.redis, self.request_id)
        me = secrets.token_hex(8)
        last = "0-0"
        cursor = after
        cancel_sent = False
        try:
            while True:
                if self.cancel_requested and not cancel_sent:
                    await self.redis.call(lambda r: r.set(cancel, 1, px=LEASE_MS * 30))
                    cancel_sent = True
                await self.redis.call(lambda r: r.set(follower, me, px=LEASE_MS))
                entries = await self.reader.call(_read, stream, last)
                if entries is None:
                    return  # expired, or never there
                for entry_id, fields in entries:
                    last = entry_id
                    seq = int(fields[b"seq"])
                    if seq <= cursor:
                        continue
                    cursor = seq
                    event = decode_event(fields[b"event"])
                    yield seq, event
                    if is_terminal(event):
                        return
        finally:
            self.reader.redis.connection_pool.disconnect()


def _read(r: Redis, stream: str, last: str) -> list[tuple[str, dict[bytes, bytes]]] | None:
    """New entries after ``last`` (waiting up to ``POLL_S``); ``None`` if the stream is gone."""
    answer: Any = r.xread({stream: last}, block=int(POLL_S * 1000))
    if not answer:
        return None if not r.exists(stream) else []
    return [(entry_id.decode(), fields) for entry_id, fields in answer[0][1]]


async def open_remote(redis: RedisClient, request_id: Any, client: str) -> RemoteJournal | None:
    """The journal of ``request_id`` on another instance, if ``client`` may resume it."""
    if not isinstance(request_id, str) or not request_id:
        return None
    _, meta, _, _ = _keys(redis, request_id)
    owner = await redis.call(lambda r: r.hget(meta, "client"))
    if owner is None or owner.decode() != client:
        return None
    return RemoteJournal(redis, redis.dedicated(), request_id)
