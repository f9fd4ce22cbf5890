"""Idle connections: the server's resident memory per open WebSocket that sends nothing.

A warm-up comes first (a few connections each ask a chit-chat question, then
close), so code paths, the upstream pool and the allocator's arenas are in
place; the server's RSS is read once it has let go of them. Then
``connections`` WebSockets are opened, ``batch`` handshakes at a time (the
listen backlog is finite), and RSS is read after every ``step`` of them; once
all are open they sit for ``settle_s`` without a frame and RSS is read again.
The figure is (RSS then − RSS before) / connections; the least-squares slope
of RSS over the steps is reported beside it as a check. For chatd, its
``chatd_active_connections`` gauge says how many it really held.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import httpx
import trio
from bench_pipeline import load_round
from trio_websocket import WebSocketConnection, connect_websocket_url, open_websocket_url

from loadgen.rig import Rig

__all__ = ["kib_per_connection", "measure_idle", "metric_value"]

CONNECT_TIMEOUT_S = 30.0


def kib_per_connection(points: Sequence[tuple[int, int]]) -> dict[str, float]:
    """From (open connections, RSS KiB) points, the first at 0 connections: the RSS
    delta of the last point over its connections, and the slope through all of them."""
    (n0, rss0), (n1, rss1) = points[0], points[-1]
    slope = (
        statistics.linear_regression([n for n, _ in points], [r for _, r in points]).slope
        if len(points) > 2
        else (rss1 - rss0) / max(1, n1 - n0)
    )
    return {
        "delta_kib_per_connection": round((rss1 - rss0) / max(1, n1 - n0), 2),
        "slope_kib_per_connection": round(slope, 2),
    }


def metric_value(exposition: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text, or None."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def chatd_metric(rig: Rig, name: str) -> float | None:
    """One of chatd's own gauges from ``/metrics`` (None for the relay, which has none)."""
    if rig.server.name != "chatd":
        return None
    async with httpx.AsyncClient(base_url=rig.server_url, timeout=10) as http:
        response = await http.get("/metrics")
        response.raise_for_status()
        return metric_value(response.text, name)


async def warm_up(rig: Rig, connections: int = 5) -> None:
    """A chit-chat question on each of a few connections, then close them."""
    async with trio.open_nursery() as nursery:
        sockets: list[WebSocketConnection] = []
        for _ in range(connections):
            sockets.append(await connect_websocket_url(nursery, rig.ws_url))
        await load_round(sockets, 7_000, 1)
        for ws in sockets:
            await ws.aclose()


async def measure_idle(
    rig: Rig, connections: int, step: int, batch: int = 50, settle_s: float = 1.0
) -> dict[str, Any]:
    """Open ``connections`` idle WebSockets to ``rig``'s server; its RSS along the way."""
    await warm_up(rig)
    await trio.sleep(settle_s)
    points = [(0, rig.server.rss_kib())]
    held: list[WebSocketConnection] = []
    async with trio.open_nursery() as owner:  # the connections' reader tasks live here

        async def connect(limit: trio.CapacityLimiter) -> None:
            async with limit:
                held.append(await connect_websocket_url(owner, rig.ws_url))

        limit = trio.CapacityLimiter(batch)
        with trio.fail_after(CONNECT_TIMEOUT_S + connections / 50):
            while len(held) < connections:
                async with trio.open_nursery() as openers:
                    for _ in range(min(step, connections - len(held))):
                        openers.start_soon(connect, limit)
                await trio.sleep(0.05)  # the server finishes each handshake's work
                points.append((len(held), rig.server.rss_kib()))
        await trio.sleep(settle_s)
        points.append((len(held), rig.server.rss_kib()))
        seen = await chatd_metric(rig, "chatd_active_connections")
        owner.cancel_scope.cancel()
    # One question on a fresh connection: the server still answers after all that.
    async with open_websocket_url(rig.ws_url) as ws:
        still = await load_round([ws], 7_001, 1)
    return {
        "connections": connections,
        "server": rig.server.name,
        "rss_before_kib": points[0][1],
        "rss_open_kib": points[-1][1],
        **kib_per_connection(points),
        "server_saw_connections": seen,
        "answered_after": still.answers,
        "points": points,
    }
