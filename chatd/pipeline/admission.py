"""Admission: capacity limits with one bounded, timed, fair queue in front.

Two :class:`FairLimiter`\\ s bound the work: ``prepare`` (history and
prompt) and ``llm_streams`` (a request holds one slot from its router call to
its last token, or until Path B needs no more LLM). A request that cannot get
a slot at once joins the queue: if the queue already holds
``limits.max_queue`` waiters, or the wait passes ``limits.queue_timeout_s``,
it is refused with :class:`Overloaded` at once, never left hanging.

The queue is fair across clients (an API key, else an address): freed slots
go round-robin over the clients waiting, each client's own requests in the
order they came, so one client's burst never pushes back another's single
request. A client new to a full queue takes the place of the newest waiter
of the client holding the most places (which is refused), so a flood fills
the queue with its own requests only until someone else asks. And no one
client holds more than nine tenths of a limiter's slots (``FairLimiter.share``;
clients on loopback, which may be many users, excepted): under one client's
flood, another's request finds a free slot at once instead of waiting for
the next one to free.

Waiters hear their position when they join and, from
:meth:`Admission.run_position_updates`, whenever it changes (one pass a
second over the queue, so a long queue costs O(n) a second, not O(n²)).
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio

from chatd.config import LimitsSettings
from chatd.exceptions import Overloaded

__all__ = ["Admission", "AdmissionStatistics", "FairLimiter", "Slot", "is_local"]

PositionCallback = Callable[[int], None]
"""Told the waiter's queue position (1 = next); must not block."""


@attrs.frozen
class AdmissionStatistics:
    """Occupancy of each limiter and the queue."""

    prepare_in_use: int
    prepare_total: int
    llm_streams_in_use: int
    llm_streams_total: int
    queued: int
    max_queue: int


@attrs.define(eq=False)
class _Waiter:
    client: str
    on_position: PositionCallback
    position: int
    granted: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    evicted: bool = False


def is_local(client: str) -> bool:
    """A client known only by a loopback address: this machine (a load test, a
    proxy in front), which may stand for many users, so per-client caps and
    shares leave it alone. Give such users keys to tell them apart."""
    if not client.startswith("addr:"):
        return False
    try:
        return ipaddress.ip_address(client[5:]).is_loopback
    except ValueError:
        return False


@attrs.define(eq=False)
class FairLimiter:
    """``total`` slots; waiters served round-robin by client; no one client
    (but a local one) holds the last tenth, so another's request finds a
    slot at once rather than after the next one frees (module docstring)."""

    total: int
    borrowed: int = 0
    _held: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _waiting: dict[str, collections.deque[_Waiter]] = attrs.field(factory=dict, init=False)
    """Each waiting client's waiters in arrival order; the dict's order is the round."""

    @property
    def share(self) -> int:
        """The most slots one client may hold."""
        return self.total - self.total // 10

    def _may_take(self, client: str) -> bool:
        return self.borrowed < self.total and (self._held[client] < self.share or is_local(client))

    def _take(self, client: str) -> None:
        self.borrowed += 1
        self._held[client] += 1

    def try_acquire(self, client: str = "") -> bool:
        """Take a free slot if nobody waits for one and ``client`` may."""
        if not self._waiting and self._may_take(client):
            self._take(client)
            return True
        return False

    def enqueue(self, waiter: _Waiter) -> None:
        """Queue ``waiter``; it may get a slot at once, the others being over their share."""
        self._waiting.setdefault(waiter.client, collections.deque()).append(waiter)
        self._grant()

    def withdraw(self, waiter: _Waiter) -> None:
        """``waiter`` leaves the queue (given up, cancelled, evicted)."""
        queue = self._waiting.get(waiter.client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.client]

    def release(self, client: str = "") -> None:
        """Give ``client``'s slot back: the next client in the round gets it."""
        self.borrowed -= 1
        self._held[client] -= 1
        if not self._held[client]:
            del self._held[client]
        self._grant()

    def _grant(self) -> None:
        """Hand free slots round the waiting clients that may take them."""
        granted = True
        while granted and self.borrowed < self.total and self._waiting:
            granted = False
            for client in list(self._waiting):
                if not self._may_take(client):
                    continue  # over its share: it keeps its place in the round
                queue = self._waiting.pop(client)
                waiter = queue.popleft()
                if queue:
                    self._waiting[client] = queue  # to the back of the round
                self._take(client)
                waiter.granted.set()
                granted = True

    def in_order(self) -> Iterator[_Waiter]:
        """The waiters in the order they will be served."""
        queues = [list(q) for q in self._waiting.values()]
        for depth in range(max(map(len, queues), default=0)):
            for queue in queues:
                if depth < len(queue):
                    yield queue[depth]


@attrs.define(eq=False)
class Slot:
    """A slot held: how long it was queued for, and its early release."""

    limiter: FairLimiter
    client: str
    waited: float
    """Seconds spent queued for it."""
    held: bool = True

    def release(self) -> None:
        """Give the slot back now (again: nothing)."""
        if self.held:
            self.held = False
            self.limiter.release(self.client)


@attrs.define
class Admission:
    """Hands out prepare and LLM-stream slots, queueing within bounds, fairly."""

    limits: LimitsSettings
    prepare: FairLimiter = attrs.field(init=False)
    llm_streams: FairLimiter = attrs.field(init=False)
    _queue: dict[int, tuple[FairLimiter, _Waiter]] = attrs.field(factory=dict, init=False)
    _tickets: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def __attrs_post_init__(self) -> None:
        self.prepare = FairLimiter(self.limits.prepare)
        self.llm_streams = FairLimiter(self.limits.llm_streams)

    def retry_after_ms(self) -> int:
        """A hint for refused callers: about one queue timeout."""
        return int(self.limits.queue_timeout_s * 1000)

    @asynccontextmanager
    async def slot(
        self, limiter: FairLimiter, on_position: PositionCallback, client: str = ""
    ) -> AsyncIterator[Slot]:
        """Hold a slot of ``limiter`` for the block, or until released sooner."""
        waited = await self._acquire(limiter, on_position, client)
        held = Slot(limiter, client, waited)
        try:
            yield held
        finally:
            held.release()

    async def _acquire(
        self, limiter: FairLimiter, on_position: PositionCallback, client: str
    ) -> float:
        # A cancelled caller takes nothing. A free slot is taken without a
        # schedule point: under load each yield on the way to the LLM call is
        # a turn at the back of the run queue, and a first token waits for all.
        await trio.lowlevel.checkpoint_if_cancelled()
        if limiter.try_acquire(client):
            return 0.0
        if len(self._queue) >= self.limits.max_queue and not self._evict_for(client):
            raise Overloaded(
                f"the admission queue is full ({self.limits.max_queue} waiting)",
                retry_after_ms=self.retry_after_ms(),
            )
        ticket = next(self._tickets)
        waiter = _Waiter(client, on_position, len(self._queue) + 1)
        self._queue[ticket] = (limiter, waiter)
        limiter.enqueue(waiter)
        started = trio.current_time()
        try:
            on_position(waiter.position)
            with trio.move_on_after(self.limits.queue_timeout_s), waiter.scope:
                await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():  # granted as it was cancelled: give it back
                limiter.release(client)
            raise
        finally:
            self._queue.pop(ticket, None)
            limiter.withdraw(waiter)
        if waiter.granted.is_set():
            return trio.current_time() - started
        if waiter.evicted:
            raise Overloaded(
                "the admission queue is full, and this client holds the most of it",
                retry_after_ms=self.retry_after_ms(),
            )
        raise Overloaded(
            f"no capacity within {self.limits.queue_timeout_s:g} s",
            retry_after_ms=self.retry_after_ms(),
        )

    def _evict_for(self, client: str) -> bool:
        """Make room for ``client`` in the full queue: the newest waiter of the
        client holding the most places goes, if that client holds more than
        ``client`` would after joining. Whether room was made."""
        held = collections.Counter(waiter.client for _limiter, waiter in self._queue.values())
        hog, most = held.most_common(1)[0] if held else ("", 0)
        if hog == client or most <= held[client] + 1:
            return False
        for ticket in reversed(self._queue):
            limiter, waiter = self._queue[ticket]
            if waiter.client == hog and not waiter.granted.is_set():
                del self._queue[ticket]
                limiter.withdraw(waiter)
                waiter.evicted = True
                waiter.scope.cancel()
                return True
        return False

    async def run_position_updates(self, interval_s: float = 1.0) -> NoReturn:
        """Tell each waiter its new position when it changed; runs forever."""
        while True:
            await trio.sleep(interval_s)
            self.update_positions()

    def update_positions(self) -> None:
        """Tell each waiter its new position, where it changed."""
        for limiter in (self.prepare, self.llm_streams):
            for position, waiter in enumerate(limiter.in_order(), start=1):
                if waiter.position != position:
                    waiter.position = position
                    waiter.on_position(position)

    def statistics(self) -> AdmissionStatistics:
        """Occupancy of the limiters and the queue."""
        return AdmissionStatistics(
            prepare_in_use=self.prepare.borrowed,
            prepare_total=self.prepare.total,
            llm_streams_in_use=self.llm_streams.borrowed,
            llm_streams_total=self.llm_streams.total,
            queued=len(self._queue),
            max_queue=self.limits.max_queue,
        )
