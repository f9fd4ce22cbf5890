"""The figures both resilience measurements take: latency percentiles of seconds in ms, the
CPU a :class:`~loadgen.cpu.Usage` counted as shares of the wall time, and the simulator's
request count."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import httpx

from loadgen.pipeline_stats import percentile
from loadgen.rig import sim_stats

__all__ = ["latency_ms", "sim_requests", "usage_report"]


def latency_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/p99.9/min/max/mean of seconds, in ms."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p95_ms": round(percentile(values, 95) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "p99_9_ms": round(percentile(values, 99.9) * 1000, 3),
        "min_ms": round(min(values) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3),
    }


def usage_report(spent: Mapping[str, float]) -> dict[str, float]:
    """:meth:`Usage.stop`'s seconds rounded, each process's busy share and the machine's cores."""
    wall = max(spent["wall_s"], 1e-9)
    return {
        **{key: round(value, 3) for key, value in spent.items()},
        "chatd_cpu_busy": round(spent["chatd_cpu_s"] / wall, 3),
        "sim_cpu_busy": round(spent["sim_cpu_s"] / wall, 3),
        "client_cpu_busy": round(spent["client_cpu_s"] / wall, 3),
        "machine_cores_busy": round(spent["machine_busy_s"] / wall, 2),
        "machine_cores_stolen": round(spent["machine_stolen_s"] / wall, 2),
    }


async def sim_requests(sim: httpx.AsyncClient) -> int:
    return (await sim_stats(sim))["requests"]
