"""The slow-reader flood: the simulator's rules that answer it long, its chats, its client
(a raw WebSocket that sends its chats and never reads again), what is sampled while it holds
its answers (chatd and the simulator, the bytes the kernel holds in TCP connections, from
``/proc/net/tcp``), the measurement itself, and MB, the unit of the RSS bar."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request, TextMessage

from loadgen.abuse_rig import CHAT_TIMEOUT_S, Rig, in_flight, metric_sum
from loadgen.chat import ask, chat_frame
from loadgen.cpu import Usage
from loadgen.rig import sim_reset, sim_stats

__all__ = [
    "WARM_UP",
    "long_answer_rules",
    "long_question",
    "mb",
    "measure_slow_readers",
    "open_slow_reader",
    "read_tcp_tables",
    "snapshot",
    "tcp_queues",
]

WARM_UP = "warm up"
"""A message the long-answer rules answer in one word (warm-ups, the check after)."""


def long_answer_rules(tokens: int, word: str = "ok") -> dict[str, Any]:
    """A simulator rules file: :data:`WARM_UP` gets one word, anything else ``tokens``
    tokens, ``word`` each (with the space before it, ``len(word) + 1`` characters)."""
    return {
        "rules": [
            {"pattern": f"^{WARM_UP}", "reply": "ok"},
            {"pattern": ".", "reply": " ".join([word] * tokens)},
        ]
    }


def long_question(n: int) -> str:
    """The ``n``-th slow reader's chat, unique so that no flight or cache answers it."""
    return f"Tell me everything you know, all of it, part {n}."


def tcp_queues(tables: Iterable[str], port: int) -> dict[str, int]:
    """Bytes the kernel holds in the established TCP connections of ``port``, from the
    text of ``/proc/net/tcp`` and ``tcp6``: on the listening side (``server_unsent``:
    written, not yet acknowledged; ``server_unread``: arrived, not yet read) and on
    the connecting side (``client_unsent``, ``client_unread``)."""
    totals = dict.fromkeys(
        ("connections", "server_unsent", "server_unread", "client_unsent", "client_unread"), 0
    )
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 5 or fields[3] != "01":  # ESTABLISHED only
                continue
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            unsent, unread = (int(x, 16) for x in fields[4].split(":"))
            if local == port:
                totals["connections"] += 1
                totals["server_unsent"] += unsent
                totals["server_unread"] += unread
            elif remote == port:
                totals["client_unsent"] += unsent
                totals["client_unread"] += unread
    return totals


def read_tcp_tables() -> list[str]:
    """The text of this machine's ``/proc/net/tcp`` and ``tcp6`` now (those it has), for
    :func:`tcp_queues`."""
    tables = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            tables.append(Path(name).read_text())
    return tables


def mb(kib: float) -> float:
    """KiB as MB (10^6 bytes), the unit of the bar."""
    return round(kib * 1024 / 1e6, 1)


async def open_slow_reader(port: int, chats: Sequence[str]) -> trio.SocketStream:
    """A WebSocket that sends ``chats`` (frames) after its handshake and never reads again."""
    host = "127.0.0.1"
    stream = await trio.open_tcp_stream(host, port)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=f"{host}:{port}", target="/v1/ws")))
        with trio.fail_after(10):
            accepted = False
            while not accepted:
                data = await stream.receive_some(65536)
                if not data:
                    raise RuntimeError("chatd closed the slow reader's handshake")
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, RejectConnection):
                        raise RuntimeError(f"chatd refused the slow reader: {event.status_code}")
                    accepted = accepted or isinstance(event, AcceptConnection)
        await stream.send_all(b"".join(ws.send(TextMessage(data=chat)) for chat in chats))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def snapshot(rig: Rig, http: httpx.AsyncClient, t0: float) -> dict[str, Any]:
    """chatd's RSS and requests, the simulator's counters, the bytes held in sockets."""
    metrics = await rig.metrics(http)
    t_s, rss_kib = round(time.perf_counter() - t0, 1), rig.server.rss_kib()
    sim = await sim_stats(http, rig.sim_control)
    tables = read_tcp_tables()
    return {
        "t_s": t_s,
        "rss_kib": rss_kib,
        "sim": sim,
        "upstream": tcp_queues(tables, rig.sim_port),
        "downstream": tcp_queues(tables, rig.chatd_port),
        "requests_in_flight": in_flight(metrics),
        "connections": int(metrics.get("chatd_active_connections", 0)),
        "reaps": metric_sum(metrics, "chatd_janitor_reaps_total"),
    }


async def measure_slow_readers(
    rig: Rig,
    *,
    sockets: int,
    chats_per_socket: int,
    window_s: float,
    sample_s: float,
    tail_s: float,
) -> dict[str, Any]:
    """Warm up, flood with ``sockets`` slow readers of ``chats_per_socket`` chats each, sample
    every ``sample_s`` over the ``window_s`` window and
    ``tail_s`` more, close the readers, then check that chatd still answers."""
    async with httpx.AsyncClient(timeout=10) as http:
        async with open_websocket_url(rig.ws_url) as ws:
            warm = await ask(ws, "warm", WARM_UP, timeout_s=CHAT_TIMEOUT_S)
            assert warm.terminal["type"] == "done", warm
        await sim_reset(http, rig.sim_control)
        await trio.sleep(1.0)
        baseline = []
        for _ in range(5):
            baseline.append(rig.server.rss_kib())
            await trio.sleep(0.2)
        rss0 = int(statistics.median(baseline))
        metrics0 = await rig.metrics(http)
        usage = Usage(rig.server, rig.sim)
        usage.start()

        t0 = time.perf_counter()
        async with contextlib.AsyncExitStack() as readers:  # closed on every way out
            for s in range(sockets):
                first = s * chats_per_socket
                chats = [
                    chat_frame(f"long-{s}-{k}", long_question(first + k))
                    for k in range(chats_per_socket)
                ]
                await readers.enter_async_context(await open_slow_reader(rig.chatd_port, chats))
            samples = []
            while True:
                samples.append(await snapshot(rig, http, t0))
                # On the sample's own time, stamped mid-snapshot: under load a snapshot
                # takes seconds, and the window's end must have a sample at or after it.
                if samples[-1]["t_s"] >= window_s + tail_s - 0.05:
                    break
                await trio.sleep_until(
                    trio.current_time() + sample_s - (time.perf_counter() - t0) % sample_s
                )
            spent = usage.stop()
            watched_s = time.perf_counter() - t0
        settled_s = await rig.until_idle(http, 15, upstream=True)
        after = await snapshot(rig, http, t0)
        await trio.sleep(2.0)
        after_rss_kib = rig.server.rss_kib()
        async with open_websocket_url(rig.ws_url) as ws:
            check = await ask(ws, "check", WARM_UP + " again", timeout_s=CHAT_TIMEOUT_S)
        metrics1 = await rig.metrics(http)

    # The window's figures are the first sample at its end, and the peak RSS until then.
    at_end = next((i for i, s in enumerate(samples) if s["t_s"] >= window_s - 0.05), None)
    assert at_end is not None, "no sample at the end of the window"
    window_peak = max([rss0] + [s["rss_kib"] for s in samples[: at_end + 1]])
    outcomes = {
        k.removeprefix("chatd_requests_total"): int(v - metrics0.get(k, 0))
        for k, v in metrics1.items()
        if k.startswith("chatd_requests_total{") and v - metrics0.get(k, 0)
    }
    return {
        "chats": sockets * chats_per_socket,
        "rss_baseline_kib": rss0,
        "window": {**samples[at_end], "peak_rss_kib": window_peak},
        "peak_rss_kib": max([rss0] + [s["rss_kib"] for s in samples]),
        "peak_rss_hwm_kib": rig.server.status_kib("VmHWM"),
        "samples": samples,
        "watched_s": round(watched_s, 1),
        "chatd_cores_busy": round(spent["chatd_cpu_s"] / watched_s, 2),
        "sim_cores_busy": round(spent["sim_cpu_s"] / watched_s, 2),
        "after_close": {**after, "settled_s": settled_s, "rss_kib_2s_later": after_rss_kib},
        "requests_by_outcome": outcomes,
        "check_after": {
            "terminal": check.terminal["type"],
            "ttft_ms": None if check.ttft_s is None else round(check.ttft_s * 1000, 1),
        },
        "chatd_log_warnings": dict(rig.server.log_events()),
    }
