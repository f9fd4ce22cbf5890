"""Short waits that share one timer: many tasks waking at about the same time.

A trio timer that fires costs a cancellation (an exception raised and caught,
~20 µs measured); a task that wakes from a ``trio.Event`` costs a few. When
hundreds of streams each want to pause a few tens of milliseconds (to let
tokens pile up into one read or one frame), :func:`sleep_until_tick` rounds
each wake-up up to the next multiple of ``resolution`` and lets the first
task waiting for that tick sleep for all of them; the others wait on its
event. Waits end at the tick or later, never earlier, except that when the
task keeping a tick is cancelled the others wake at once (they were only
waiting to coalesce work, so waking early costs nothing but a smaller batch).

The ticks are kept per ``trio.run`` (a :class:`trio.lowlevel.RunVar`).
Imports nothing of chatd.
"""

from __future__ import annotations

import math

import trio

__all__ = ["RESOLUTION", "sleep_until_tick"]

RESOLUTION = 0.01
"""The default tick: waits end on multiples of 10 ms."""

_TICKS: trio.lowlevel.RunVar[dict[int, trio.Event]] = trio.lowlevel.RunVar("chatd_ticks")


async def sleep_until_tick(when: float, resolution: float = RESOLUTION) -> None:
    """Sleep until ``when`` rounded up to a multiple of ``resolution`` (trio's clock)."""
    try:
        ticks = _TICKS.get()
    except LookupError:
        ticks = {}
        _TICKS.set(ticks)
    tick = math.ceil(when / resolution - 1e-9)  # 0.07 / 0.01 is 7.000000000000001
    event = ticks.get(tick)
    if event is not None:
        await event.wait()
        return
    event = ticks[tick] = trio.Event()
    try:
        await trio.sleep_until(tick * resolution)
    finally:
        del ticks[tick]
        event.set()
