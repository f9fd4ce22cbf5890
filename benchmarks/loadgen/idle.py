"""Idle connections: the server's resident memory per open WebSocket that sends nothing.

After a warm-up (a few connections ask a question, then close) and ``settle_s``, RSS is read;
then ``connections`` WebSockets open, ``batch`` handshakes at a time, RSS read after every
``step`` of them and once more ``settle_s`` after the last. The figure is (RSS then − RSS
before) / connections, beside the least-squares slope over the steps as a check.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, connect_websocket_url, open_websocket_url

from loadgen.pipeline_load import load_round
from loadgen.rig import Rig

__all__ = ["kib_per_connection", "measure_idle", "metric_value"]

CONNECT_TIMEOUT_S = 30.0


def kib_per_connection(points: Sequence[tuple[int, int]]) -> dict[str, float]:
    """From (open connections, RSS KiB) points, the first at 0 connections: the RSS
    delta of the last point over its connections, and the slope through all of them."""
    (n0, rss0), (n1, rss1) = points[0], points[-1]
    delta = (rss1 - rss0) / max(1, n1 - n0)
    xs, ys = [n for n, _ in points], [rss for _, rss in points]
    slope = statistics.linear_regression(xs, ys).slope if len(points) > 2 else delta
    return {
        "delta_kib_per_connection": round(delta, 2),
        "slope_kib_per_connection": round(slope, 2),
    }


def metric_value(exposition: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text, or None."""
    lines = exposition.splitlines()
    return next((float(line.split()[1]) for line in lines if line.startswith(name + " ")), None)


async def chatd_metric(rig: Rig, name: str) -> float | None:
    """One of chatd's own gauges from ``/metrics`` (None for the relay, which has none)."""
    if rig.server.name != "chatd":
        return None
    async with httpx.AsyncClient(base_url=rig.server_url, timeout=10) as http:
        response = await http.get("/metrics")
        response.raise_for_status()
        return metric_value(response.text, name)


async def measure_idle(
    rig: Rig, connections: int, step: int, batch: int = 50, settle_s: float = 1.0
) -> dict[str, Any]:
    """Open ``connections`` idle WebSockets to ``rig``'s server; its RSS along the way."""
    async with trio.open_nursery() as nursery:  # the warm-up: a question on each of 5
        sockets = [await connect_websocket_url(nursery, rig.ws_url) for _ in range(5)]
        await load_round(sockets, 7_000, 1)
        for ws in sockets:
            await ws.aclose()
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
