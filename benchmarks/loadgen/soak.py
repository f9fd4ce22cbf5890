"""Soak: does chatd's memory settle, or grow with the requests it has served?

The users run in phases, each to a request count (unique questions numbered on from phase to
phase); after each, every connection closed and ``settle_s`` later, chatd's RSS and its
answer-cache size are read. A sampler keeps RSS against requests sent for the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from loadgen.idle import chatd_metric
from loadgen.progress import show_progress
from loadgen.rig import Rig
from loadgen.scenarios import Scenario
from loadgen.summary import summarise
from loadgen.users import Record, RunState, run_users

__all__ = ["measure_soak"]


async def _sample(rig: Rig, run: RunState, done: int, samples: list[list[float]]) -> None:
    while True:
        samples.append([done + run.sent, rig.server.rss_kib()])
        await trio.sleep(0.5)


async def measure_soak(
    rig: Rig,
    scenario: Scenario,
    users: int,
    checkpoints: Sequence[int],
    ttft_ms: float,
    tokens_per_s: float,
    progress: bool = False,
    settle_s: float = 1.0,
) -> dict[str, Any]:
    """Run ``scenario`` up to each of ``checkpoints`` requests in turn; RSS after each."""
    records: list[Record] = []
    samples: list[list[float]] = []
    points: list[dict[str, Any]] = []
    started = trio.current_time()
    for phase, upto in enumerate(checkpoints):
        run = RunState(
            rig.ws_url, scenario, users, duration_s=3600.0, ramp_s=0.5, think_s=0.0,
            max_requests=upto - len(records), seed=phase + 1, message_offset=len(records),
        )  # fmt: skip
        async with trio.open_nursery() as watchers:
            run.t0 = trio.current_time()
            watchers.start_soon(_sample, rig, run, len(records), samples)
            if progress:
                watchers.start_soon(show_progress, run, f"soak to {upto}")
            await run_users(run)
            watchers.cancel_scope.cancel()
        records += run.records
        await trio.sleep(settle_s)
        points.append(
            {
                "requests": len(records),
                "rss_kib": rig.server.rss_kib(),
                "cache_entries": await chatd_metric(rig, "chatd_cache_entries"),
                "chatd_cpu_s": round(rig.server.cpu_seconds(), 2),
            }
        )
    wall = trio.current_time() - started
    summary = summarise(records, wall, ttft_ms, tokens_per_s)
    first, last = points[0], points[-1]
    entries = (last["cache_entries"] or 0) - (first["cache_entries"] or 0)
    return {
        "scenario": scenario.name,
        "users": users,
        "checkpoints": points,
        "growth": round(last["rss_kib"] / first["rss_kib"] - 1, 4),
        # All of the growth put down to the answers the cache gained: an upper bound.
        "kib_per_cache_entry_gained": (
            round((last["rss_kib"] - first["rss_kib"]) / entries, 2) if entries > 0 else None
        ),
        **{k: summary[k] for k in ("requests", "answered", "errors_by_code", "cached")},
        "wall_s": round(wall, 1),
        "samples": samples,
    }
