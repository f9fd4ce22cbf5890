"""A shared clock for thousands of paced streams: one timer, many sleepers per tick.

``trio.sleep_until`` is a cancel scope whose deadline fires by raising and
catching ``Cancelled``: some 40% of the simulator's CPU per token when
every token is its own sleep. :class:`Pacer` instead rounds each wake-up
time up to a tick (1 ms by default), parks the sleepers of one tick on one
:class:`trio.Event`, and runs a single task that sleeps until the earliest
tick and sets its event. Sleepers then cost a dict lookup and a parking-lot
wait, and the timer fires once per tick however many streams are due in it.
Tokens come up to one tick late, which no client can tell from network
jitter.
"""

from __future__ import annotations

import heapq
import math
from typing import NoReturn

import attrs
import trio

__all__ = ["TOLERANCE_S", "Pacer", "PacerStatistics"]

DEFAULT_TICK_S = 0.001
# Sleepers may wake this much before their deadline, so that float noise in
# a computed deadline (0.1 + 2 * 0.1 is not 0.3) never costs a whole tick.
# Callers deciding what is due must allow the same slack.
TOLERANCE_S = 1e-6


@attrs.define(eq=False)
class Pacer:
    """Wakes sleepers at tick boundaries; :meth:`run` must be running in a nursery."""

    tick_s: float = DEFAULT_TICK_S
    _events: dict[int, trio.Event] = attrs.field(factory=dict, init=False)
    _ticks: list[int] = attrs.field(factory=list, init=False)  # a heap of _events' keys
    _new_tick: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the first tick at or after ``deadline`` (less TOLERANCE_S).

        Always a checkpoint, even when the deadline has passed.
        """
        tick = math.ceil((deadline - TOLERANCE_S) / self.tick_s)
        if tick * self.tick_s <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        event = self._events.get(tick)
        if event is None:
            event = self._events[tick] = trio.Event()
            if not self._ticks or tick < self._ticks[0]:
                self._new_tick.set()  # the timer sleeps too long: wake it to re-plan
            heapq.heappush(self._ticks, tick)
        await event.wait()

    def statistics(self) -> PacerStatistics:
        """How many ticks have sleepers waiting."""
        return PacerStatistics(pending_ticks=len(self._ticks))

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """The timer: fire each tick's event when its time comes, forever."""
        task_status.started()
        while True:
            if not self._ticks:
                await self._new_tick.wait()
                self._new_tick = trio.Event()
                continue
            with trio.move_on_at(self._ticks[0] * self.tick_s):
                await self._new_tick.wait()
            if self._new_tick.is_set():
                self._new_tick = trio.Event()
            now = trio.current_time()
            while self._ticks and self._ticks[0] * self.tick_s <= now:
                self._events.pop(heapq.heappop(self._ticks)).set()


@attrs.frozen
class PacerStatistics:
    """A snapshot of a :class:`Pacer`."""

    pending_ticks: int
