"""Fairness under one key's flood, its parts: key A's flood worker (run in a child process:
connections each keeping chats in flight) and a reader of the lines it prints, key B's phases
(chats one after another, chatd's slots and queue sampled meanwhile) and their figures."""

from __future__ import annotations

import collections
import itertools
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from loadgen.abuse_rig import CHAT_TIMEOUT_S, LLM_STREAMS_IN_USE, Rig
from loadgen.chat import ask, chat_frame
from loadgen.cpu import Usage
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import percentile

__all__ = [
    "PHASES",
    "b_phase",
    "flood_worker",
    "median_or_none",
    "overhead_summary",
    "ratio",
    "read_line",
]

PHASES = ("warm", "unloaded", "loaded", "unloaded-after")
"""Key B's phases, in order; the warm-up is not reported."""


def overhead_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """Median, p90 (nearest rank), min and max of TTFT overheads in ms."""
    if not values_ms:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None}
    return {
        "n": len(values_ms),
        "p50_ms": round(statistics.median(values_ms), 1),
        "p90_ms": round(percentile(values_ms, 90), 1),
        "min_ms": round(min(values_ms), 1),
        "max_ms": round(max(values_ms), 1),
    }


def ratio(loaded: float | None, unloaded: float | None) -> float | None:
    if loaded is None or unloaded is None or unloaded <= 0:
        return None
    return round(loaded / unloaded, 2)


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


async def flood_worker(config: Mapping[str, Any]) -> dict[str, Any]:
    """Key A's flood (run in a child process): ``sockets`` connections each keeping
    ``chats`` chats in flight, reading everything, until stdin closes."""
    counts: collections.Counter[str] = collections.Counter()
    numbers = itertools.count(int(config["first"]))
    headers = [(b"authorization", f"Bearer {config['key']}".encode())]
    started = time.perf_counter()

    async def connection(index: int, task_status: trio.TaskStatus[None]) -> None:
        ends: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        async with open_websocket_url(config["url"], extra_headers=headers) as ws:

            async def read() -> None:
                while True:
                    event = orjson.loads(await ws.get_message())
                    if event["type"] == "token":
                        counts["token_frames"] += 1
                    elif event["type"] in ("done", "error") and event.get("id") in ends:
                        ends.pop(event["id"]).send_nowait(event)

            async def lane(lane_no: int) -> None:
                while True:
                    send, receive = trio.open_memory_channel[dict[str, Any]](1)
                    request_id = f"a{index}-{lane_no}-{counts['sent']}"
                    ends[request_id] = send
                    counts["sent"] += 1
                    await ws.send_message(chat_frame(request_id, unique_chit_chat(next(numbers))))
                    event = await receive.receive()
                    if event["type"] == "done":
                        counts["done"] += 1
                        counts["tokens"] += event["usage"]["completion_tokens"]
                    else:
                        counts[f"error:{event.get('code')}"] += 1
                        await trio.sleep(float(config["pause_s"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for lane_no in range(int(config["chats"])):
                    nursery.start_soon(lane, lane_no)
                task_status.started()

    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with trio.open_nursery() as nursery:
        for index in range(int(config["sockets"])):
            await nursery.start(connection, index)
        print(orjson.dumps({"ready": int(config["sockets"])}).decode(), flush=True)
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    return {**counts, "elapsed_s": round(elapsed, 2), "cpu_s": round(time.process_time(), 2)}


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        data = await stream.receive_some()
        if not data:
            raise RuntimeError(f"the flood worker ended: {bytes(buffer)!r}")
        buffer += data
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def b_phase(
    rig: Rig,
    ws: WebSocketConnection,
    http: httpx.AsyncClient,
    name: str,
    *,
    chats: int,
    think_s: float,
    ttft_ms: float,
) -> dict[str, Any]:
    """Key B's ``b_chats`` chats one after another, llm_streams in use and the queue sampled
    meanwhile; the phase's figures."""
    records: list[dict[str, Any]] = []
    in_use: list[int] = []
    queued: list[int] = []

    async def sample() -> None:
        while True:
            metrics = await rig.metrics(http)
            in_use.append(int(metrics.get(LLM_STREAMS_IN_USE, 0)))
            queued.append(int(metrics.get("chatd_queue_depth", 0)))
            await trio.sleep(0.25)

    first = 100_000 * (1 + PHASES.index(name))
    usage = Usage(rig.server, rig.sim)
    usage.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        for k in range(chats):
            message = unique_chit_chat(first + k)
            got = await ask(ws, f"b-{name}-{k}", message, timeout_s=CHAT_TIMEOUT_S)
            terminal = got.terminal
            timings = terminal.get("timings") or {}
            records.append(
                {
                    "terminal": terminal["type"],
                    "code": terminal.get("code"),
                    "client_ttft_ms": None if got.ttft_s is None else round(got.ttft_s * 1000, 1),
                    "server_ttft_ms": timings.get("ttft_ms"),
                    "queue_ms": timings.get("queue_ms"),
                    "cached": terminal.get("cached"),
                    "shared": terminal.get("shared"),
                }
            )
            await trio.sleep(think_s)
        nursery.cancel_scope.cancel()
    spent = usage.stop()
    wall = spent["wall_s"]
    done = [r for r in records if r["terminal"] == "done"]

    def overheads(key: str) -> dict[str, Any]:
        """TTFT minus the simulator's, of the answers that have one."""
        return overhead_summary([r[key] - ttft_ms for r in done if r[key]])

    return {
        "name": name,
        "chats": len(records),
        "done": len(done),
        "errors": dict(collections.Counter(r["code"] for r in records if r["terminal"] != "done")),
        "cached_or_shared": sum(bool(r["cached"] or r["shared"]) for r in done),
        "client_overhead": overheads("client_ttft_ms"),
        "server_overhead": overheads("server_ttft_ms"),
        "queue": overhead_summary([r["queue_ms"] for r in done if r["queue_ms"] is not None]),
        "llm_streams_in_use": {"min": min(in_use, default=None), "median": median_or_none(in_use)},
        "queued": {
            "min": min(queued, default=None),
            "median": median_or_none(queued),
            "max": max(queued, default=None),
        },
        "wall_s": round(wall, 1),
        "cores_busy": {
            "machine": round(spent["machine_busy_s"] / wall, 2),
            "chatd": round(spent["chatd_cpu_s"] / wall, 2),
            "sim": round(spent["sim_cpu_s"] / wall, 2),
        },
        "records": records,
    }
