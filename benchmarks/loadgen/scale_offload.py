"""The scale scenario's second part, the thread-offload cost per Redis call: redis-py called
in a plain loop against chatd's ``RedisClient.call`` (a worker thread), one row per way of
calling, timed over repetitions, and the rows measured in turn."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import redis
import trio

from chatd.config import RedisSettings
from chatd.stores.redis.client import RedisClient, open_redis
from loadgen.pipeline_stats import percentile
from loadgen.scale_rig import Rig

__all__ = ["KEY", "Row", "measure_offload", "pipelined"]

KEY = "bench-offload:key"


def pipelined(commands: int) -> Callable[[redis.Redis], Any]:
    def call(r: redis.Redis) -> Any:
        pipe = r.pipeline(transaction=False)
        for _ in range(commands):
            pipe.get(KEY)
        return pipe.execute()

    return call


@attrs.define
class Row:
    """One way of calling Redis over its repetitions: in a plain loop with no threads
    (``sync``), or through ``RedisClient.call``, ``concurrency`` at a time (``offload``)."""

    name: str
    command: str
    mode: str
    concurrency: int
    call: Callable[[redis.Redis], Any]
    commands_per_call: int = 1
    latencies_s: list[float] = attrs.field(factory=list)
    us_per_call_by_repeat: list[float] = attrs.field(factory=list)
    cpu_us_per_call_by_repeat: list[float] = attrs.field(factory=list)

    async def run(self, plain: redis.Redis, client: RedisClient, calls: int, keep: bool) -> None:
        """``calls`` calls, and if ``keep`` their times (the CPU: all of this process's)."""
        latencies: list[float] = []
        left = iter(range(calls))

        async def caller() -> None:
            for _ in left:
                started = time.perf_counter()
                await client.call(self.call)
                latencies.append(time.perf_counter() - started)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        if self.mode == "sync":
            for _ in range(calls):
                started = time.perf_counter()
                self.call(plain)
                latencies.append(time.perf_counter() - started)
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(self.concurrency):
                    nursery.start_soon(caller)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if keep:
            self.latencies_s.extend(latencies)
            self.us_per_call_by_repeat.append(round(wall / calls * 1e6, 1))
            self.cpu_us_per_call_by_repeat.append(round(cpu / calls * 1e6, 1))

    def result(self) -> dict[str, Any]:
        """Times per call are the median of the repetitions: one repetition hit by another
        process's burst moves it little."""
        us = statistics.median(self.us_per_call_by_repeat)
        return {
            "name": self.name,
            "command": self.command,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "commands_per_call": self.commands_per_call,
            "calls": len(self.latencies_s),
            "us_per_call": round(us, 1),
            "us_per_command": round(us / self.commands_per_call, 1),
            "calls_per_s": round(1e6 / us),
            "latency_p50_us": round(statistics.median(self.latencies_s) * 1e6, 1),
            "latency_p95_us": round(percentile(self.latencies_s, 95) * 1e6, 1),
            "cpu_us_per_call": round(statistics.median(self.cpu_us_per_call_by_repeat), 1),
            "us_per_call_by_repeat": self.us_per_call_by_repeat,
            "cpu_us_per_call_by_repeat": self.cpu_us_per_call_by_repeat,
        }


async def measure_offload(
    redis_url: str,
    rig: Rig,
    *,
    calls: int,
    repeats: int,
    concurrencies: Sequence[int],
    pipeline_commands: int,
) -> dict[str, Any]:
    """Every row in turn (``calls`` calls each), ``repeats`` times, after a warm-up of each;
    and how busy the rest of the machine was meanwhile (nothing of ours but Redis should be)."""
    n, rows = pipeline_commands, []
    for command, call in (("PING", lambda r: r.ping()), ("GET", lambda r: r.get(KEY))):
        rows.append(Row(f"{command}, plain loop", command, "sync", 1, call))
        for c in concurrencies:
            rows.append(Row(f"{command}, RedisClient.call", command, "offload", c, call))
    rows.append(Row(f"pipeline of {n} GETs, plain loop", "GET", "sync", 1, pipelined(n), n))
    for c in (1, max(concurrencies)):
        name = f"pipeline of {n} GETs, RedisClient.call"
        rows.append(Row(name, "GET", "offload", c, pipelined(n), n))
    plain = redis.Redis.from_url(redis_url, socket_timeout=2)
    plain.set(KEY, "x" * 100)
    settings = RedisSettings(url=redis_url)
    async with open_redis(settings) as client:
        for row in rows:  # warm-up, not counted: threads, pool connections
            await row.run(plain, client, max(100, calls // 10), keep=False)
        clocks0, wall0 = rig.clocks(), time.perf_counter()
        for _ in range(repeats):
            for row in rows:
                await row.run(plain, client, calls, keep=True)
        wall, clocks1 = time.perf_counter() - wall0, rig.clocks()
    plain.close()
    results = [row.result() for row in rows]
    sync = {r["command"]: r for r in results if r["mode"] == "sync" and r["commands_per_call"] == 1}
    for r in results:
        if r["mode"] == "offload" and r["commands_per_call"] == 1:
            base = sync[r["command"]]
            r["offload_overhead_us"] = round(r["us_per_call"] - base["us_per_call"], 1)
            r["offload_cpu_overhead_us"] = round(r["cpu_us_per_call"] - base["cpu_us_per_call"], 1)
    busy = {k: round((clocks1[k] - clocks0[k]) / wall, 2) for k in ("machine", "client", "redis")}
    return {
        "rows": results,
        "threads": settings.threads,
        "wall_s": round(wall, 1),
        "machine_cores_busy": busy["machine"],
        "this_process_cores_busy": busy["client"],
        "redis_cores_busy": busy["redis"],
        "other_cores_busy": round(busy["machine"] - busy["client"] - busy["redis"], 2),
    }
