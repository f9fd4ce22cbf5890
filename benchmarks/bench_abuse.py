"""Abuse (issue 15): a flood of long answers nobody reads, and one key flooding while another asks.

1. Slow readers: raw WebSockets send many chats whose answers are long, and never read again;
   chatd's RSS and what happens upstream (bar: RSS growth <= 50 MB, answers paused or cut).
2. Fairness: key A floods from a child process while key B asks one chat after another
   (bar: B's TTFT overhead loaded at most 2x unloaded, median and p90).

The report says how each figure is taken. Results go to benchmarks/results/abuse.{json,md};
``--quick`` (about 40 s) prints its report and writes files only with ``--output DIR``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request, TextMessage

sys.path.insert(0, str(Path(__file__).parent))
import loadgen.rig
from bench_pipeline import percentile, unique_chit_chat
from loadgen.chat import ask, chat_frame
from loadgen.cpu import Usage
from loadgen.processes import clean_env, log_tails_on_failure, start_chatd, start_sim
from loadgen.script import RunRecord, provenance_markdown, script_parser
from machine import machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
RSS_BAR_MB = 50.0
"""Issue 15: chatd's RSS may grow this much (10^6 bytes) under the slow-reader flood."""
TTFT_BAR_RATIO = 2.0
"""Issue 15: B's TTFT overhead under A's flood at most this times the unloaded one."""
WARM_UP = "warm up"
"""A message the long-answer rules answer in one word (warm-ups, the check after)."""
CHAT_TIMEOUT_S = 60.0
LLM_STREAMS_IN_USE = 'chatd_limiter_in_use{limiter="llm_streams"}'
PHASES = ("warm", "unloaded", "loaded", "unloaded-after")
"""Key B's phases, in order; the warm-up is not reported."""


@attrs.frozen(kw_only=True)
class Params:
    """What one run does."""

    quick: bool
    # 1. slow-reader flood
    answer_tokens: int = 20_000
    long_ttft_ms: float = 20.0
    long_tokens_per_s: float = 2000.0
    slow_sockets: int = 3
    chats_per_socket: int = 64
    window_s: float  # the figure: RSS growth and upstream outcomes over this long
    tail_s: float  # then watched this much longer, the sockets still open and unread
    word: str = "ok"  # each answer is this word answer_tokens times (a token: word and space)
    variant_word: str | None
    """A second flood with this longer word, whose answers pass the 64 Ki characters a
    request may have waiting (``_PENDING_CHARS``) but not ``limits.max_answer_chars``;
    ``None``: no second flood."""
    sample_s: float = 1.0
    # 2. fairness
    fair_ttft_ms: float = 300.0
    fair_tokens_per_s: float = 40.0
    llm_streams: int = 40
    max_queue: int = 100
    flood_sockets: int = 3
    flood_chats: int = 64  # chats key A keeps in flight on each of its connections
    refusal_pause_s: float = 0.1
    b_chats: int  # chats key B asks in each phase (unloaded, loaded, unloaded again)
    b_think_s: float = 0.25


def params_from(args: argparse.Namespace) -> Params:
    quick = bool(args.quick)
    return Params(
        quick=quick,
        window_s=args.window_s or (8.0 if quick else 30.0),
        tail_s=0.0 if quick else 15.0,
        variant_word=None if quick else "abc",
        b_chats=args.b_chats or (4 if quick else 20),
    )


# --- pure helpers -----------------------------------------------------------------------


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


def read_tcp_queues(port: int) -> dict[str, int]:
    """:func:`tcp_queues` for this machine now."""
    tables = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            tables.append(Path(name).read_text())
    return tcp_queues(tables, port)


def metric_samples(exposition: str) -> dict[str, float]:
    """Prometheus text as ``{'name{label="v"}': value}`` (``name`` alone unlabelled)."""
    samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def metric_sum(samples: Mapping[str, float], prefix: str) -> int:
    """The samples whose name (with labels) starts with ``prefix``, summed."""
    return int(sum(v for k, v in samples.items() if k.startswith(prefix)))


def in_flight(samples: Mapping[str, float]) -> int:
    """Requests under way in any state, from :func:`metric_samples`."""
    return metric_sum(samples, "chatd_requests_in_flight{")


def mb(kib: float) -> float:
    """KiB as MB (10^6 bytes), the unit of the bar."""
    return round(kib * 1024 / 1e6, 1)


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


# --- processes --------------------------------------------------------------------------


@attrs.frozen
class Rig(loadgen.rig.Rig):
    """A simulator and the chatd in front of it (``server``), and chatd's operator key."""

    operator_key: str | None = None

    @property
    def sim_port(self) -> int:
        return int(self.sim_control.rsplit(":", 1)[1])

    @property
    def chatd_port(self) -> int:
        return int(self.server_url.rsplit(":", 1)[1])

    async def sim_stats(self, http: httpx.AsyncClient) -> dict[str, int]:
        response = await http.get(self.sim_control + "/_sim/stats")
        response.raise_for_status()
        return dict(response.json())

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float]:
        url = self.server_url + "/metrics"
        headers = {"authorization": f"Bearer {self.operator_key}"} if self.operator_key else {}
        response = await http.get(url, headers=headers)
        response.raise_for_status()
        return metric_samples(response.text)

    async def busy(self, http: httpx.AsyncClient, upstream: bool) -> bool:
        """A request under way in chatd, or (with ``upstream``) an answer open upstream."""
        if upstream and (await self.sim_stats(http))["active"]:
            return True
        return in_flight(await self.metrics(http)) > 0

    async def until_idle(self, http: httpx.AsyncClient, timeout_s: float, upstream: bool) -> float:
        """Until not :meth:`busy` (at most ``timeout_s``): the seconds that took."""
        started = time.perf_counter()
        with trio.move_on_after(timeout_s):
            while await self.busy(http, upstream):  # noqa: ASYNC110 (other processes: polled)
                await trio.sleep(0.2)
        return round(time.perf_counter() - started, 2)


@contextlib.contextmanager
def running_rig(
    label: str,
    workdir: Path,
    timing: tuple[float, float],
    sim_args: Sequence[str] = (),
    chatd_env: Mapping[str, str] | None = None,
    operator_key: str | None = None,
) -> Iterator[Rig]:
    """``chatd sim-llm`` (at ``timing``: ttft ms, tokens/s; with ``sim_args``) and ``chatd
    serve`` on free ports, each its own process, for the block; their log tails if it fails."""
    with contextlib.ExitStack() as stack:
        sim = start_sim(workdir, ROOT, *timing, stack, f"{label}-sim", sim_args)
        chatd = start_chatd(
            f"{label}-chatd", str(sim.listening["url"]), workdir, ROOT, stack, chatd_env
        )
        rig = Rig(sim, chatd, operator_key=operator_key)
        with log_tails_on_failure(rig.processes):
            yield rig


# --- 1. slow-reader flood ---------------------------------------------------------------


async def open_slow_reader(port: int, chats: Sequence[str]) -> trio.SocketStream:
    """A WebSocket that sends ``chats`` (frames) after its handshake and never reads again."""
    host = "127.0.0.1"
    stream = await trio.open_tcp_stream(host, port)
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
    return stream


async def snapshot(rig: Rig, http: httpx.AsyncClient, t0: float) -> dict[str, Any]:
    """chatd's RSS and requests, the simulator's counters, the bytes held in sockets."""
    metrics = await rig.metrics(http)
    return {
        "t_s": round(time.perf_counter() - t0, 1),
        "rss_kib": rig.server.rss_kib(),
        "sim": await rig.sim_stats(http),
        "upstream": read_tcp_queues(rig.sim_port),
        "downstream": read_tcp_queues(rig.chatd_port),
        "requests_in_flight": in_flight(metrics),
        "connections": int(metrics.get("chatd_active_connections", 0)),
        "reaps": metric_sum(metrics, "chatd_janitor_reaps_total"),
    }


async def measure_slow_readers(rig: Rig, params: Params, tail_s: float) -> dict[str, Any]:
    """Warm up, flood with slow readers, sample every ``sample_s`` over the window and
    ``tail_s`` more, close the readers, then check that chatd still answers."""
    async with httpx.AsyncClient(timeout=10) as http:
        async with open_websocket_url(rig.ws_url) as ws:
            warm = await ask(ws, "warm", WARM_UP, timeout_s=CHAT_TIMEOUT_S)
            assert warm.terminal["type"] == "done", warm
        (await http.post(rig.sim_control + "/_sim/reset")).raise_for_status()
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
        readers = []
        for s in range(params.slow_sockets):
            first = s * params.chats_per_socket
            chats = [
                chat_frame(f"long-{s}-{k}", long_question(first + k))
                for k in range(params.chats_per_socket)
            ]
            readers.append(await open_slow_reader(rig.chatd_port, chats))
        samples = []
        while True:
            samples.append(await snapshot(rig, http, t0))
            # On the sample's own time, stamped mid-snapshot: under load a snapshot
            # takes seconds, and the window's end must have a sample at or after it.
            if samples[-1]["t_s"] >= params.window_s + tail_s - 0.05:
                break
            await trio.sleep_until(
                trio.current_time() + params.sample_s - (time.perf_counter() - t0) % params.sample_s
            )
        spent = usage.stop()
        watched_s = time.perf_counter() - t0

        for reader in readers:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await reader.aclose()
        settled_s = await rig.until_idle(http, 15, upstream=True)
        after = await snapshot(rig, http, t0)
        await trio.sleep(2.0)
        after_rss_kib = rig.server.rss_kib()
        async with open_websocket_url(rig.ws_url) as ws:
            check = await ask(ws, "check", WARM_UP + " again", timeout_s=CHAT_TIMEOUT_S)
        metrics1 = await rig.metrics(http)

    # The window's figures are the first sample at its end, and the peak RSS until then.
    at_end = next((i for i, s in enumerate(samples) if s["t_s"] >= params.window_s - 0.05), None)
    assert at_end is not None, "no sample at the end of the window"
    window_peak = max([rss0] + [s["rss_kib"] for s in samples[: at_end + 1]])
    outcomes = {
        k.removeprefix("chatd_requests_total"): int(v - metrics0.get(k, 0))
        for k, v in metrics1.items()
        if k.startswith("chatd_requests_total{") and v - metrics0.get(k, 0)
    }
    return {
        "chats": params.slow_sockets * params.chats_per_socket,
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


def run_slow_readers(params: Params, workdir: Path, word: str, tail_s: float) -> dict[str, Any]:
    """One slow-reader flood, with answers of ``word`` repeated."""
    rules = workdir / f"slow-{word}.json"
    rules.write_bytes(orjson.dumps(long_answer_rules(params.answer_tokens, word)))
    timing = (params.long_ttft_ms, params.long_tokens_per_s)
    with running_rig(f"slow-{word}", workdir, timing, ["--rules", str(rules)]) as rig:
        result = trio.run(measure_slow_readers, rig, params, tail_s)
    return {**result, "word": word, "answer_chars": params.answer_tokens * (len(word) + 1) - 1}


# --- 2. fairness ------------------------------------------------------------------------


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
    rig: Rig, ws: WebSocketConnection, http: httpx.AsyncClient, name: str, params: Params
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
        for k in range(params.b_chats):
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
            await trio.sleep(params.b_think_s)
        nursery.cancel_scope.cancel()
    spent = usage.stop()
    wall = spent["wall_s"]
    done = [r for r in records if r["terminal"] == "done"]

    def overheads(key: str) -> dict[str, Any]:
        """TTFT minus the simulator's, of the answers that have one."""
        return overhead_summary([r[key] - params.fair_ttft_ms for r in done if r[key]])

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


async def measure_fairness(rig: Rig, params: Params, key_a: str, key_b: str) -> dict[str, Any]:
    """Key B's chats unloaded, under key A's flood (a child process), and unloaded again."""
    headers = [(b"authorization", f"Bearer {key_b}".encode())]
    flood_config = {
        "url": rig.ws_url,
        "key": key_a,
        "sockets": params.flood_sockets,
        "chats": params.flood_chats,
        "first": 10_000_000,
        "pause_s": params.refusal_pause_s,
    }
    # Saturated: A holds all it may (nine tenths of the slots: one client never takes the
    # last tenth), and someone is queued.
    share = params.llm_streams - params.llm_streams // 10
    phases = {}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        open_websocket_url(rig.ws_url, extra_headers=headers) as ws,
    ):
        for name in ("warm", "unloaded"):
            phases[name] = await b_phase(rig, ws, http, name, params)
        worker = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--flood-worker", orjson.dumps(flood_config).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=clean_env(ROOT),
        )
        assert worker.stdin is not None and worker.stdout is not None
        buffer = bytearray()
        try:
            with trio.fail_after(30):
                await read_line(worker.stdout, buffer)  # its connections are open
                ramp0 = time.perf_counter()
                while True:
                    metrics = await rig.metrics(http)
                    if (
                        metrics.get(LLM_STREAMS_IN_USE, 0) >= share
                        and metrics.get("chatd_queue_depth", 0) > 0
                    ):
                        break
                    await trio.sleep(0.1)
                ramp_s = round(time.perf_counter() - ramp0, 2)
                await trio.sleep(1.0)
            phases["loaded"] = await b_phase(rig, ws, http, "loaded", params)
        finally:
            await worker.stdin.aclose()
            with trio.fail_after(30):
                flood = orjson.loads(await read_line(worker.stdout, buffer))
                await worker.wait()
        idle_after_s = await rig.until_idle(http, 30, upstream=False)
        if not params.quick:
            phases["unloaded-after"] = await b_phase(rig, ws, http, "unloaded-after", params)

    del phases["warm"]
    unloaded, loaded = phases["unloaded"]["client_overhead"], phases["loaded"]["client_overhead"]
    flood["done_per_s"] = round(flood.get("done", 0) / max(1e-9, flood["elapsed_s"]), 1)
    return {
        "phases": phases,
        "flood": flood,
        "ramp_s": ramp_s,
        "idle_after_flood_s": idle_after_s,
        "ratio_p50": ratio(loaded["p50_ms"], unloaded["p50_ms"]),
        "ratio_p90": ratio(loaded["p90_ms"], unloaded["p90_ms"]),
        "chatd_log_warnings": dict(rig.server.log_events()),
    }


def run_fairness(params: Params, workdir: Path) -> dict[str, Any]:
    key_a, key_b, operator = (secrets.token_urlsafe(24) for _ in range(3))
    env = {
        "CHATD_SERVER_API_KEYS": orjson.dumps([key_a, key_b]).decode(),
        "CHATD_SERVER_OPERATOR_KEYS": orjson.dumps([operator]).decode(),
        "CHATD_LIMITS_LLM_STREAMS": str(params.llm_streams),
        "CHATD_LIMITS_MAX_QUEUE": str(params.max_queue),
    }
    timing = (params.fair_ttft_ms, params.fair_tokens_per_s)
    with running_rig("fair", workdir, timing, chatd_env=env, operator_key=operator) as rig:
        return trio.run(measure_fairness, rig, params, key_a, key_b)


# --- verdicts and report ----------------------------------------------------------------


def unpaused_answer_s(params: Mapping[str, Any]) -> float:
    """How long one long answer takes upstream when it is read as fast as it comes."""
    return float(
        params["long_ttft_ms"] / 1000 + params["answer_tokens"] / params["long_tokens_per_s"]
    )


def slow_reader_verdict(slow: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[bool, str]:
    """Issue 15's first bar, met or not, with the numbers. An answer still open upstream
    counts as paused only once the window is twice as long as an unpaused answer takes:
    before that it may merely not have finished."""
    window = slow["window"]
    growth = mb(window["peak_rss_kib"] - slow["rss_baseline_kib"])
    sim = window["sim"]
    rss_ok = growth <= RSS_BAR_MB
    answer_s = unpaused_answer_s(params)
    conclusive = window["t_s"] >= 2 * answer_s
    streams_ok = sim["completed"] == 0 and (conclusive or not sim["active"])
    met = rss_ok and streams_ok
    still_open = f"{sim['active']} still open"
    if sim["active"] and conclusive:
        still_open += f" (paused: open more than twice the {answer_s:g} s an answer takes unpaused)"
    elif sim["active"]:
        still_open += (
            " (paused or still streaming: the window is too short to tell, under twice the "
            f"{answer_s:g} s an answer takes unpaused)"
        )
    return met, (
        f"Slow-reader flood (bar: RSS growth <= {RSS_BAR_MB:g} MB, upstream answers paused or "
        f"cut, not read to the end): **{'met' if met else 'not met'}**. Over "
        f"{window['t_s']:g} s chatd's RSS went {mb(slow['rss_baseline_kib'])} -> "
        f"{mb(window['peak_rss_kib'])} MB at its peak (growth **{growth} MB**, "
        f"{'within' if rss_ok else 'over'} the bar); of {sim['requests']} upstream answers "
        f"**{sim['completed']} were read to the end**, {still_open}, "
        f"{sim['client_disconnects']} cut."
    )


def fairness_verdict(fair: Mapping[str, Any]) -> tuple[bool, str]:
    """Issue 15's second bar, met or not, with the numbers."""
    unloaded, loaded = fair["phases"]["unloaded"], fair["phases"]["loaded"]
    u, lo = unloaded["client_overhead"], loaded["client_overhead"]
    r50, r90 = fair["ratio_p50"], fair["ratio_p90"]
    met = r50 is not None and r90 is not None and r50 <= TTFT_BAR_RATIO and r90 <= TTFT_BAR_RATIO
    return met, (
        f"Fairness under one key's flood (bar: B's TTFT overhead loaded <= {TTFT_BAR_RATIO:g}x "
        f"unloaded): **{'met' if met else 'not met'}**. Key B's overhead median / p90: "
        f"**{lo['p50_ms']} / {lo['p90_ms']} ms** under the flood against **{u['p50_ms']} / "
        f"{u['p90_ms']} ms** without it (**{r50}x / {r90}x**); of that, waiting for a slot "
        f"(chatd's `queue_ms`) {loaded['queue']['p50_ms']} / {loaded['queue']['p90_ms']} ms "
        f"loaded. B's chats: {loaded['done']} of {loaded['chats']} answered loaded, errors "
        f"{loaded['errors'] or 'none'}."
    )


def _slow_rows(samples: Sequence[Mapping[str, Any]], rss0: int) -> str:
    return "\n".join(
        f"| {s['t_s']:g} | {mb(s['rss_kib'])} | {mb(s['rss_kib'] - rss0)} "
        f"| {s['sim']['requests']} | {s['sim']['active']} | {s['sim']['completed']} "
        f"| {s['sim']['client_disconnects']} "
        f"| {_held_mb(s, 'upstream')} | {_held_mb(s, 'downstream')} "
        f"| {s['requests_in_flight']} | {s['connections']} | {s['reaps']} |"
        for s in samples
    )


def _phase_rows(phases: Mapping[str, Mapping[str, Any]]) -> str:
    def pair(summary: Mapping[str, Any]) -> str:
        return f"{summary['p50_ms']} / {summary['p90_ms']}"

    return "\n".join(
        f"| {p['name']} | {p['done']} / {p['chats']} | **{pair(p['client_overhead'])}** "
        f"| {p['client_overhead']['min_ms']}–{p['client_overhead']['max_ms']} "
        f"| {pair(p['server_overhead'])} | {pair(p['queue'])} "
        f"| {p['llm_streams_in_use']['median']} | {p['queued']['median']} "
        f"| {p['cores_busy'].get('chatd')} / {p['cores_busy'].get('sim')} / "
        f"{p['cores_busy'].get('machine')} | {p['errors'] or ''} |"
        for p in phases.values()
    )


def _held_mb(sample: Mapping[str, Any], side: str) -> float:
    """Bytes the kernel holds on one hop, as MB: the sender's unsent plus the reader's unread."""
    queues = sample[side]
    return mb((queues["server_unsent"] + queues["client_unread"]) / 1024)


def per_token_reading(slow: Mapping[str, Any], answer_tokens: int) -> str:
    """The window's RSS growth per upstream token read to the end, against the text's
    own size per token: how much chatd keeps per token it holds."""
    window = slow["window"]
    completed = window["sim"]["completed"]
    if not completed:
        return "No upstream answer was read to the end within the window."
    growth_b = (window["peak_rss_kib"] - slow["rss_baseline_kib"]) * 1024
    tokens = completed * answer_tokens
    text_b = slow["answer_chars"] / answer_tokens
    return (
        f"{completed} answers read to the end are {tokens:,} tokens: the growth is "
        f"~{growth_b / tokens:.0f} bytes per token read, for {text_b:.1f} bytes of text per "
        f"token (~{growth_b / completed / 1e6:.2f} MB per {answer_tokens:,}-token answer)."
    )


def _slow_section(slow: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    window, after = slow["window"], slow["after_close"]
    rss0 = slow["rss_baseline_kib"]
    return (
        f"- RSS: baseline {mb(rss0)} MB; peak within the window {mb(window['peak_rss_kib'])} MB "
        f"(**+{mb(window['peak_rss_kib'] - rss0)} MB**); at {window['t_s']:g} s "
        f"{mb(window['rss_kib'])} MB; peak over the whole watch {mb(slow['peak_rss_kib'])} MB "
        f"(VmHWM, the process's lifetime high: {mb(slow['peak_rss_hwm_kib'])} MB).\n"
        f"- Upstream at {window['t_s']:g} s: {window['sim']['requests']} requests, "
        f"**{window['sim']['completed']} completed**, {window['sim']['active']} open, "
        f"{window['sim']['client_disconnects']} cut by chatd; {_held_mb(window, 'upstream')} MB "
        f"held in the kernel buffers of the {window['upstream']['connections']} upstream "
        f"sockets, {_held_mb(window, 'downstream')} MB in the slow readers' sockets. "
        f"{per_token_reading(slow, p['answer_tokens'])}\n"
        f"- CPU over the {slow['watched_s']:g} s watched: chatd {slow['chatd_cores_busy']} "
        f"cores, simulator {slow['sim_cores_busy']}.\n"
        f"- After the sockets closed: upstream settled in {after['settled_s']} s "
        f"({after['sim']['completed']} completed, {after['sim']['client_disconnects']} cut, "
        f"{after['sim']['active']} open in all); chatd requests in flight "
        f"{after['requests_in_flight']}; RSS {mb(after['rss_kib'])} MB, "
        f"{mb(after['rss_kib_2s_later'])} MB 2 s later. chatd's requests by outcome: "
        f"{slow['requests_by_outcome']}. A chat after it all: "
        f"`{slow['check_after']['terminal']}`, TTFT {slow['check_after']['ttft_ms']} ms.\n"
        f"- chatd's warning/error log lines by event: {slow['chatd_log_warnings'] or 'none'}.\n\n"
        "| t s | RSS MB | growth MB | sim requests | open | completed | cut "
        "| upstream held MB | downstream held MB | chatd requests | connections | reaps |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{_slow_rows(slow['samples'], rss0)}\n\n"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, slow, fair = result["params"], result["slow_readers"], result["fairness"]
    variant = result.get("slow_readers_variant")
    flood = fair["flood"]
    verdicts = "\n".join(f"- {line}" for line in result["verdicts"])
    loaded = fair["phases"]["loaded"]
    variant_md = ""
    if variant is not None:
        variant_md = (
            f"### The same with `{variant['word']}` for a token\n\n"
            f"A second flood, the same but for the word: {variant['answer_chars']:,} characters "
            "an answer, more than the 64 Ki characters a request may have waiting for a "
            "lagging client before it waits itself (`_PENDING_CHARS` in "
            "`chatd/server/connection.py`), less than `limits.max_answer_chars`. Watched for "
            f"the window only ({p['window_s']:g} s).\n\n{_slow_section(variant, p)}"
        )
    return (
        "# Abuse: slow readers flooding long answers; one key flooding another\n\n"
        f"`{result['command']}` ({result['elapsed_s']} s); "
        f"{provenance_markdown(result['chatd'])}. Everything runs on this one machine "
        f"({result['machine']['nproc']} cores, shared with other people's work: load average "
        f"{result['machine']['loadavg_at_start']} at the start, {result['loadavg_at_end']} at "
        "the end): chatd, the simulated LLM and the clients share its cores.\n\n"
        f"## Verdicts\n\n{verdicts}\n\n"
        "## 1. Slow-reader flood\n\n"
        "`chatd serve` with its default settings (one process) in front of `chatd sim-llm` "
        "(its own process) with a rules file answering every chat with "
        f"{p['answer_tokens']:,} tokens (`{p['word']} {p['word']} ...`, "
        f"{slow['answer_chars']:,} characters, under `limits.max_answer_chars`; ~200 bytes of "
        f"SSE a token upstream) at {p['long_tokens_per_s']:g} tokens/s after "
        f"{p['long_ttft_ms']:g} ms. After a warm-up chat and `POST /_sim/reset`, "
        f"{p['slow_sockets']} raw sockets do the WebSocket handshake, send "
        f"{p['chats_per_socket']} unique chats each ({slow['chats']} in all; no flight or "
        "cache can share them) and never read again. Every second: chatd's VmRSS, the "
        "simulator's `/_sim/stats`, chatd's `/metrics`, and the bytes the kernel holds in "
        "established sockets (`/proc/net/tcp`): *upstream held* is the simulator's unsent "
        "plus chatd's unread bytes on its LLM connections, *downstream held* chatd's unsent "
        "plus the slow readers' unread bytes. Growth is against the median of 5 samples "
        f"before the flood. The figure is the first {p['window_s']:g} s; the sockets then "
        f"stay open and unread for {p['tail_s']:g} s more, to see what the janitor "
        "(`janitor.stalled_client_s` = 30 s) and the LLM gap timeout "
        "(`llm.timeouts.gap_s` = 30 s) do, and are then closed.\n\n"
        f"{_slow_section(slow, p)}{variant_md}"
        "## 2. Fairness under a flood from one key\n\n"
        "`chatd serve` with `server.api_keys` = two keys (and an operator key for "
        f"`/metrics`), `limits.llm_streams` = {p['llm_streams']}, `limits.max_queue` = "
        f"{p['max_queue']}, otherwise defaults, in front of `chatd sim-llm` with the built-in "
        f"rules at {p['fair_ttft_ms']:g} ms to the first token and {p['fair_tokens_per_s']:g} "
        "tokens/s (the simulator's defaults). Every chat is unique chit-chat, answered "
        "directly (33–55 tokens), never cached or shared. Key A, from a child process, keeps "
        f"{p['flood_chats']} chats in flight on each of {p['flood_sockets']} connections "
        f"({p['flood_sockets'] * p['flood_chats']} in all, against {p['llm_streams']} slots "
        f"and {p['max_queue']} places in the queue), reads every frame, and re-sends a "
        f"refused chat {p['refusal_pause_s'] * 1000:g} ms later (ignoring `retry_after_ms`). "
        f"Key B, on one connection of this process, asks {p['b_chats']} chats one after "
        f"another ({p['b_think_s'] * 1000:g} ms between them): without the flood, under it "
        "(once A held all it may, nine tenths of the slots, and someone queued, "
        f"{fair['ramp_s']} s after A connected, "
        "plus 1 s), and, in a full run, without it again. *Overhead* is TTFT minus the "
        f"simulator's {p['fair_ttft_ms']:g} ms: as B measures it (`chat` sent to first "
        "`token` frame) and as chatd reports it (`timings.ttft_ms`); *queue* is chatd's "
        "`timings.queue_ms`, the wait for a slot. Slots in use and queue depth are sampled "
        "from `/metrics` every 0.25 s during B's chats.\n\n"
        "| phase | B answered | overhead p50 / p90 ms (client) | min–max ms "
        "| overhead p50 / p90 ms (chatd) | queue p50 / p90 ms | llm_streams in use (median) "
        "| queued (median) | cores busy chatd / sim / machine | errors |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{_phase_rows(fair['phases'])}\n\n"
        f"Ratios loaded / unloaded (client overhead): median **{fair['ratio_p50']}x**, p90 "
        f"**{fair['ratio_p90']}x**. Key B's client TTFTs loaded (ms): "
        f"{[r['client_ttft_ms'] for r in loaded['records']]}; its queue waits (ms): "
        f"{[r['queue_ms'] for r in loaded['records']]}.\n\n"
        f"Key A's flood over {flood['elapsed_s']} s: {flood.get('sent', 0)} chats sent, "
        f"{flood.get('done', 0)} answered ({flood['done_per_s']} a second: a slot came free "
        f"every ~{round(1000 / max(flood['done_per_s'], 1e-9), 1)} ms on average), refused "
        f"or failed: {_flood_errors(flood) or 'none'}; the flooder used {flood['cpu_s']} s "
        f"of CPU. {round_robin_reading(fair)} chatd was idle again "
        f"{fair['idle_after_flood_s']} s after the flood "
        f"stopped. chatd's warning/error log lines by event: "
        f"{fair['chatd_log_warnings'] or 'none'}.\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def round_robin_reading(fair: Mapping[str, Any]) -> str:
    """What the slot turnover alone predicts for B's wait: arithmetic, not a measurement."""
    rate = fair["flood"]["done_per_s"]
    queued = fair["phases"]["loaded"]["queued"]["median"]
    if not rate or queued is None:
        return ""
    return (
        "For scale (arithmetic on these figures, not a measurement): round-robin puts B's "
        "chat behind at most one of A's, so it waits for one or two slots to come free, "
        f"~{round(2000 / rate)} ms for two at A's rate; a first-come queue {queued:g} deep "
        f"would have kept it ~{queued / rate:.1f} s."
    )


def _flood_errors(flood: Mapping[str, Any]) -> dict[str, int]:
    return {k.removeprefix("error:"): v for k, v in flood.items() if k.startswith("error:")}


# --- main -------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--flood-worker":
        summary = trio.run(flood_worker, orjson.loads(sys.argv[2]))
        print(orjson.dumps(summary).decode(), flush=True)
        return
    parser = script_parser(__doc__, "a short run (about 40 s)")
    parser.add_argument("--window-s", type=float, help="slow-reader window (default 30; quick 8)")
    parser.add_argument("--b-chats", type=int, help="key B's chats per phase (20; quick 4)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where abuse.{json,md} go (default benchmarks/results; "
        "with --quick, nowhere unless given)",
    )
    args = parser.parse_args()
    params = params_from(args)
    record = RunRecord.start(__file__, ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        slow = run_slow_readers(params, Path(tmp), params.word, params.tail_s)
        variant = None
        if params.variant_word is not None:
            variant = run_slow_readers(params, Path(tmp), params.variant_word, 0.0)
        fair = run_fairness(params, Path(tmp))
    result = record.result(
        "abuse: slow-reader flood of long answers; fairness under one key's flood",
        params,
        {"slow_readers": slow, "slow_readers_variant": variant, "fairness": fair},
        loadavg_at_end=True,
    )
    verdicts = [slow_reader_verdict(slow, result["params"]), fairness_verdict(fair)]
    result["met"] = {"slow_readers": verdicts[0][0], "fairness": verdicts[1][0]}
    result["verdicts"] = [line for _met, line in verdicts]
    md = markdown(result)
    output = args.output or (None if params.quick else RESULTS)
    if output is None:
        print(md)
    else:
        write_results(output, "abuse", result, md)


if __name__ == "__main__":
    main()
