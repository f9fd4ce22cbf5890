"""One scenario, start to finish: its own simulator and chatd, the users, the readings.

Fresh processes per scenario, so one's cache, flights, breaker and memory do not colour the
next. chatd's RSS is read before the users (start), after the last closed (end) and once a
second (peak); CPU and the simulator's counters over the users' run only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from loadgen.cpu import Usage
from loadgen.progress import show_progress
from loadgen.rig import Rig, Server, rig_running, run_outage, sample_forever, sim_stats
from loadgen.scenarios import Scenario
from loadgen.summary import outage_phases, summarise
from loadgen.users import Record, RunState, run_users

Finish = Callable[[Rig, Sequence[Record]], dict[str, Any]]

__all__ = ["Plan", "run_scenario"]


@attrs.frozen
class Plan:
    """How big a run is and how the simulator answers."""

    users: int
    duration_s: float
    ramp_s: float
    think_s: float
    max_requests: int | None = None
    ttft_ms: float = 300.0
    tokens_per_s: float = 40.0
    seed: int = 1
    progress: bool = True


def run_scenario(
    scenario: Scenario,
    plan: Plan,
    chatd_path: Path,
    server: Server = "chatd",
    watch_closes: bool = False,
    finish: Finish | None = None,
) -> dict[str, Any]:
    """Start the rig, run the users, and return the scenario's figures. ``finish``, if
    given, adds its own figures from the rig and the records before the rig stops."""
    with rig_running(scenario.name, chatd_path, plan.ttft_ms, plan.tokens_per_s,
                     scenario.chatd_env, server, watch_closes) as rig:  # fmt: skip
        result, records = trio.run(_measure, scenario, plan, rig)
        return result | (finish(rig, records) if finish is not None else {})


async def _measure(scenario: Scenario, plan: Plan, rig: Rig) -> tuple[dict[str, Any], list[Record]]:
    duration, outage = max(plan.duration_s, scenario.min_duration_s), scenario.behaviour.outage
    run = RunState(
        rig.ws_url, scenario, plan.users, duration, plan.ramp_s, plan.think_s,
        plan.max_requests, plan.seed,
    )  # fmt: skip
    samples: list[dict[str, float]] = []
    marks: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=rig.sim_control, timeout=10) as http:
        rss_start = rig.server.rss_kib()
        stats0 = await sim_stats(http)
        usage = Usage(rig.server, rig.sim)
        usage.start()
        async with trio.open_nursery() as watchers:
            run.t0 = trio.current_time()
            watchers.start_soon(sample_forever, rig, run, samples)
            if plan.progress:
                watchers.start_soon(show_progress, run, scenario.name)
            if outage is not None:
                watchers.start_soon(run_outage, http, run, outage, marks)
            await run_users(run)
            watchers.cancel_scope.cancel()
        used = usage.stop()
        stats1 = await sim_stats(http)
        await trio.sleep(0.5)  # let chatd let go of the closed connections
        rss_end = rig.server.rss_kib()
    wall, cpu = used["wall_s"], used["chatd_cpu_s"]
    result = summarise(run.records, wall, plan.ttft_ms, plan.tokens_per_s)
    calls = stats1["requests"] - stats0["requests"]
    result |= {
        "scenario": scenario.name,
        "description": scenario.description,
        "duration_s": duration,
        "chatd_env": dict(scenario.chatd_env),
        "client_errors": dict(run.errors),
        "chatd_cpu_s": round(cpu, 3),
        "sim_cpu_s": round(used["sim_cpu_s"], 3),
        "client_cpu_s": round(used["client_cpu_s"], 3),
        # The machine is shared: cores busy in all, and the rig's own share.
        "machine_cores_busy": round(used["machine_busy_s"] / wall, 2),
        "rig_cores_busy": round((cpu + used["sim_cpu_s"] + used["client_cpu_s"]) / wall, 2),
        "chatd_cpu_busy": round(cpu / wall, 3),
        # None when no LLM streamed (Path B only): no tokens to divide by.
        "chatd_cpu_s_per_1k_tokens": (
            round(cpu / result["tokens"] * 1000, 4) if result["tokens"] else None
        ),
        "chatd_rss_kib": {
            "start": rss_start,
            "peak": max([rss_start, *(s["chatd_rss_kib"] for s in samples)]),
            "end": rss_end,
        },
        "upstream_calls": calls,
        "upstream_calls_per_answered": round(calls / max(1, result["answered"]), 3),
        "upstream_calls_per_request": round(calls / max(1, result["requests"]), 3),
        "chatd_cpu_ms_per_request": round(cpu / max(1, result["requests"]) * 1000, 2),
        "sim_client_disconnects": stats1["client_disconnects"] - stats0["client_disconnects"],
        "samples": samples,
    }
    if outage is not None:
        result["outage"] = outage_phases(run.records, marks)
    return result, run.records
