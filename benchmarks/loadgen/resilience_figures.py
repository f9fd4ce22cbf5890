"""The figures both resilience measurements take: the CPU a :class:`~loadgen.cpu.Usage`
counted as shares of the wall time, and the simulator's request count (their latencies are
:func:`~loadgen.pipeline_stats.latency_ms`, every figure, to the µs)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from loadgen.cpu import busy_shares
from loadgen.rig import sim_stats

__all__ = ["sim_requests", "usage_report"]


def usage_report(spent: Mapping[str, float]) -> dict[str, float]:
    """:meth:`Usage.stop`'s seconds rounded, each process's busy share and the machine's cores."""
    return {**{key: round(value, 3) for key, value in spent.items()}, **busy_shares(spent)}


async def sim_requests(sim: httpx.AsyncClient) -> int:
    return (await sim_stats(sim))["requests"]
