"""Admission: capacity limiters with one bounded, timed queue in front.

Two ``trio.CapacityLimiter``s bound the work: ``prepare`` (history and
prompt) and ``llm_streams`` (a request holds one slot from its router call to
its last token). A request that cannot get a slot at once joins the queue:
if the queue already holds ``limits.max_queue`` waiters, or the wait passes
``limits.queue_timeout_s``, it is refused with :class:`Overloaded` at once,
never left hanging. Waiters hear their position when they join and, from
:meth:`Admission.run_position_updates`, whenever it changes (one pass a
second over the queue, so a long queue costs O(n) a second, not O(n²)).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio

from chatd.config import LimitsSettings
from chatd.exceptions import Overloaded

__all__ = ["Admission", "AdmissionStatistics", "Slot"]

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
class Slot:
    """A slot held: how long it was queued for, and its early release."""

    limiter: trio.CapacityLimiter
    token: object
    waited: float
    """Seconds spent queued for it."""
    held: bool = True

    def release(self) -> None:
        """Give the slot back now (again: nothing)."""
        if self.held:
            self.held = False
            self.limiter.release_on_behalf_of(self.token)


@attrs.define
class _Waiter:
    on_position: PositionCallback
    position: int


@attrs.define
class Admission:
    """Hands out prepare and LLM-stream slots, queueing within bounds."""

    limits: LimitsSettings
    prepare: trio.CapacityLimiter = attrs.field(init=False)
    llm_streams: trio.CapacityLimiter = attrs.field(init=False)
    _queue: dict[int, _Waiter] = attrs.field(factory=dict, init=False)
    _tickets: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def __attrs_post_init__(self) -> None:
        self.prepare = trio.CapacityLimiter(self.limits.prepare)
        self.llm_streams = trio.CapacityLimiter(self.limits.llm_streams)

    def retry_after_ms(self) -> int:
        """A hint for refused callers: about one queue timeout."""
        return int(self.limits.queue_timeout_s * 1000)

    @asynccontextmanager
    async def slot(
        self, limiter: trio.CapacityLimiter, on_position: PositionCallback
    ) -> AsyncIterator[Slot]:
        """Hold a slot of ``limiter`` for the block, or until released sooner."""
        token = object()
        waited = await self._acquire(limiter, token, on_position)
        held = Slot(limiter, token, waited)
        try:
            yield held
        finally:
            held.release()

    async def _acquire(
        self, limiter: trio.CapacityLimiter, token: object, on_position: PositionCallback
    ) -> float:
        # A cancelled caller takes nothing. A free slot is taken without the
        # schedule point trio's own acquire has: under load each yield on the
        # way to the LLM call is a turn at the back of the run queue, and a
        # first token waits for all of them.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            pass
        else:
            return 0.0
        if len(self._queue) >= self.limits.max_queue:
            raise Overloaded(
                f"the admission queue is full ({self.limits.max_queue} waiting)",
                retry_after_ms=self.retry_after_ms(),
            )
        ticket = next(self._tickets)
        position = len(self._queue) + 1
        self._queue[ticket] = _Waiter(on_position, position)
        started = trio.current_time()
        try:
            on_position(position)
            with trio.move_on_after(self.limits.queue_timeout_s):
                await limiter.acquire_on_behalf_of(token)
                return trio.current_time() - started
        finally:
            del self._queue[ticket]
        raise Overloaded(
            f"no capacity within {self.limits.queue_timeout_s:g} s",
            retry_after_ms=self.retry_after_ms(),
        )

    async def run_position_updates(self, interval_s: float = 1.0) -> NoReturn:
        """Tell each waiter its new position when it changed; runs forever."""
        while True:
            await trio.sleep(interval_s)
            self.update_positions()

    def update_positions(self) -> None:
        """Tell each waiter its new position, where it changed."""
        for position, waiter in enumerate(list(self._queue.values()), start=1):
            if waiter.position != position:
                waiter.position = position
                waiter.on_position(position)

    def statistics(self) -> AdmissionStatistics:
        """Occupancy of the limiters and the queue."""
        return AdmissionStatistics(
            prepare_in_use=self.prepare.borrowed_tokens,
            prepare_total=int(self.prepare.total_tokens),
            llm_streams_in_use=self.llm_streams.borrowed_tokens,
            llm_streams_total=int(self.llm_streams.total_tokens),
            queued=len(self._queue),
            max_queue=self.limits.max_queue,
        )
