"""The periodic collection that stands in for Python's automatic one in ``chatd serve``."""

from __future__ import annotations

import gc

import trio

from chatd.server.heap import PeriodicCollection


async def test_collects_on_its_interval_and_reports_what_it_found(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Nothing before the interval; then a collection, reported only if it found cycles."""
    collection = PeriodicCollection(interval_s=300)
    gc.collect()
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    await trio.sleep(299)
    assert collection.sweep() == []
    await trio.sleep(1)
    (reap,) = collection.sweep()
    assert (reap.kind, reap.id) == ("garbage", "1 object")
    assert reap.reason.startswith("in cycles, collected in ")
    await trio.sleep(300)
    assert collection.sweep() == [], "nothing left to find"
