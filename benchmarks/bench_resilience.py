"""Resilience end to end: failing fast with the LLM down, and a storm of identical questions.

1. The LLM answers HTTP 503 and chatd's breaker is open: a refused chat's round trip.
2. N identical chats at once, twice, with shared flights and the answer cache on, then off.

chatd and the simulated LLM run as processes of their own, this one is the client; the
report says how each figure is taken. ``python benchmarks/bench_resilience.py [--quick]``
writes benchmarks/results/resilience{,-quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import percentile, unique_chit_chat
from loadgen.chat import Reply, ask, chat_frame, open_connections
from loadgen.cpu import Usage
from loadgen.processes import Process
from loadgen.rig import Rig, rig_running, set_fault, sim_stats
from loadgen.script import RunRecord, provenance_markdown, script_parser
from machine import machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
TARGET_P99_MS = 5.0
BREAKER_OPEN_TEXT = "circuit breaker is open"
STORM_MESSAGE = "tell me a long story about the sea"
BLOCKS = 4
"""Measured blocks per frame kind and concurrency, the kinds taking turns (ABBA) so that
drift in the machine's load falls on both alike."""


@attrs.frozen(kw_only=True)
class Params:
    """What one run does."""

    quick: bool
    failure_threshold: int = 5
    open_timeout_s: float = 600.0
    breaker_chats: int
    breaker_connections: int
    breaker_warmup: int
    storm_n: int
    storm_connections: int
    storm_ttft_ms: float = 300.0
    storm_tokens_per_s: float = 40.0


def params_from(args: argparse.Namespace) -> Params:
    quick = bool(args.quick)
    return Params(
        quick=quick,
        breaker_chats=args.breaker_chats or (200 if quick else 2000),
        breaker_connections=args.connections,
        breaker_warmup=20 if quick else 100,
        storm_n=args.storm_n or (100 if quick else 500),
        storm_connections=args.storm_connections,
    )


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


async def readyz(chatd: httpx.AsyncClient) -> dict[str, Any]:
    response = await chatd.get("/readyz")
    return {"status_code": response.status_code, "body": response.json()}


# --- 1. LLM down, breaker open ----------------------------------------------------------


@attrs.frozen
class FrameKind:
    """A chat that chatd answers with an error, and what that error should be."""

    name: str
    message: Callable[[], object]
    code: str
    text: str | None = None

    def unexpected(self, event: Mapping[str, Any]) -> bool:
        code = event.get("code", event["type"])
        return code != self.code or bool(self.text and self.text not in event.get("message", ""))


# Every breaker_open chat is a text never sent before, so no two share a flight, even on
# two connections at once: each goes the whole way to the breaker. A bad_request's message
# is not a text: chatd's reader refuses it before any pipeline work.
_message_numbers = itertools.count()
KINDS = (
    FrameKind(
        "breaker_open",
        lambda: unique_chit_chat(next(_message_numbers)),
        "upstream_unavailable",
        BREAKER_OPEN_TEXT,
    ),
    FrameKind("bad_request", lambda: 5, "bad_request"),
)


async def error_round_trips(
    ws: WebSocketConnection, prefix: str, kind: FrameKind, ks: range, replies: list[Reply]
) -> None:
    """A chat of ``kind`` for each of ``ks``, each sent once the previous one's error is in."""
    for k in ks:
        replies.append(await ask(ws, f"{prefix}-{k}", kind.message(), timeout_s=30))


def error_report(
    kind: FrameKind, replies: Sequence[Reply], spent: Mapping[str, float]
) -> dict[str, Any]:
    """Latency, what came back, and CPU per frame of one kind."""
    seconds = [reply.duration_s for reply in replies]
    events = [reply.terminal for reply in replies]
    unexpected = [event for event in events if kind.unexpected(event)]
    waits = [event["retry_after_ms"] for event in events if "retry_after_ms" in event]
    return {
        **latency_ms(seconds),
        "at_or_over_target": sum(t * 1000 >= TARGET_P99_MS for t in seconds),
        "codes": dict(collections.Counter(event.get("code", event["type"]) for event in events)),
        "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:3],
        "retry_after_ms_range": [min(waits), max(waits)] if waits else None,
        "chatd_cpu_us_per_frame": round(spent["chatd_cpu_s"] / max(1, len(seconds)) * 1e6, 1),
        **usage_report(spent),
    }


async def open_the_breaker(ws: WebSocketConnection, limit: int = 100) -> list[dict[str, Any]]:
    """Chats one at a time until one is refused by the open breaker; their errors."""
    seen = []
    for k in range(limit):
        reply = await ask(ws, f"opening-{k}", unique_chit_chat(900_000 + k), timeout_s=60)
        seen.append({key: reply.terminal.get(key) for key in ("type", "code", "message")})
        if BREAKER_OPEN_TEXT in reply.terminal.get("message", ""):
            return seen
    raise RuntimeError(f"the breaker did not open in {limit} chats: {seen[-3:]}")


async def error_blocks(
    rig: Rig, sockets: Sequence[WebSocketConnection], chats: int
) -> dict[str, Any]:
    """About ``chats`` timed round trips of each kind over ``sockets``, in ABBA blocks."""
    replies: dict[str, list[Reply]] = {kind.name: [] for kind in KINDS}
    spent = {kind.name: collections.Counter[str]() for kind in KINDS}
    per_block = max(1, math.ceil(chats / BLOCKS / len(sockets)))
    for block in range(BLOCKS):
        for kind in KINDS if block % 2 == 0 else reversed(KINDS):
            ks = range(block * per_block, (block + 1) * per_block)
            usage = Usage(rig.server, rig.sim)
            usage.start()
            async with trio.open_nursery() as nursery:
                for c, ws in enumerate(sockets):
                    prefix = f"{kind.name}-{len(sockets)}-{c}"
                    nursery.start_soon(error_round_trips, ws, prefix, kind, ks, replies[kind.name])
            spent[kind.name].update(usage.stop())
    return {kind.name: error_report(kind, replies[kind.name], spent[kind.name]) for kind in KINDS}


async def measure_breaker(rig: Rig, params: Params) -> dict[str, Any]:
    """Open chatd's LLM breaker, then time error round trips with it open."""
    async with (
        httpx.AsyncClient(base_url=rig.sim_control, timeout=10) as sim_http,
        httpx.AsyncClient(base_url=rig.server_url, timeout=10) as chatd_http,
        contextlib.AsyncExitStack() as stack,
    ):
        ready_before = await readyz(chatd_http)
        await set_fault(sim_http, mode="error", status=503)
        requests_before = await sim_requests(sim_http)
        sockets = await open_connections(stack, rig.ws_url, params.breaker_connections)
        opening = await open_the_breaker(sockets[0])
        requests_at_open = await sim_requests(sim_http)
        ready_open = await readyz(chatd_http)
        for kind in KINDS:  # warm-up, not counted
            ks = range(params.breaker_warmup)
            await error_round_trips(sockets[0], f"warm-{kind.name}", kind, ks, [])
        runs = {
            str(n): await error_blocks(rig, sockets[:n], params.breaker_chats)
            for n in sorted({1, params.breaker_connections})
        }
        requests_after = await sim_requests(sim_http)
        ready_after = await readyz(chatd_http)
    return {
        "readyz_before": ready_before,
        "opening_chats": opening,
        "sim_requests_to_open": requests_at_open - requests_before,
        "readyz_open": ready_open,
        "readyz_after": ready_after,
        "sim_requests_while_open": requests_after - requests_at_open,
        "runs_by_connections": runs,
    }


# --- 2. storm of identical questions ----------------------------------------------------


@attrs.define
class Wave:
    """What the client saw of one wave, by request id."""

    sent: dict[str, float] = attrs.field(factory=dict)
    first_token: dict[str, float] = attrs.field(factory=dict)
    ended: dict[str, float] = attrs.field(factory=dict)
    terminal: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    texts: dict[str, list[str]] = attrs.field(factory=lambda: collections.defaultdict(list))
    frames: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """Frames received, by event type."""

    async def send_and_read(
        self, ws: WebSocketConnection, frames: Sequence[tuple[str, str]]
    ) -> None:
        """Send ``frames`` (request id, ``chat`` frame) and read until each has ended."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read, ws, {request_id for request_id, _ in frames})
            for request_id, frame in frames:
                self.sent[request_id] = time.perf_counter()
                await ws.send_message(frame)

    async def read(self, ws: WebSocketConnection, left: set[str]) -> None:
        while left:
            event = orjson.loads(await ws.get_message())
            request_id = event.get("id")
            if request_id not in left:
                continue
            kind = event["type"]
            self.frames[kind] += 1
            if kind == "token":
                self.first_token.setdefault(request_id, time.perf_counter())
                self.texts[request_id].append(event["text"])
            elif kind in ("done", "error"):
                self.ended[request_id] = time.perf_counter()
                self.terminal[request_id] = event
                left.discard(request_id)


async def storm_wave(
    sockets: Sequence[WebSocketConnection], chats: Sequence[tuple[str, object]]
) -> Wave:
    """``chats`` (request id, message), round robin over ``sockets``, all sent at once."""
    frames: list[list[tuple[str, str]]] = [[] for _ in sockets]
    for k, (request_id, message) in enumerate(chats):
        frames[k % len(sockets)].append((request_id, chat_frame(request_id, message)))
    wave = Wave()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for ws, mine in zip(sockets, frames, strict=True):
                nursery.start_soon(wave.send_and_read, ws, mine)
    return wave


def wave_result(wave: Wave, calls: int, usage: Mapping[str, float]) -> dict[str, Any]:
    """The figures of one wave: ``calls`` upstream, ``usage`` from :func:`usage_report`."""
    done_ids = [r for r, event in wave.terminal.items() if event["type"] == "done"]
    done = [wave.terminal[r] for r in done_ids]
    errors = [event for event in wave.terminal.values() if event["type"] == "error"]
    answers = collections.Counter("".join(wave.texts[r]) for r in done_ids)
    server_ttft = [e["timings"]["ttft_ms"] for e in done if e["timings"].get("ttft_ms") is not None]
    per_chat = max(1, len(wave.sent))
    return {
        "chats": len(wave.sent),
        "upstream_calls": calls,
        "done": len(done),
        "shared": sum(bool(e.get("shared")) for e in done),
        "cached": sum(bool(e.get("cached")) for e in done),
        "finish_reasons": dict(collections.Counter(e["finish_reason"] for e in done)),
        "paths": dict(collections.Counter(e["path"] for e in done)),
        "errors": dict(collections.Counter(e["code"] for e in errors)),
        "error_examples": errors[:3],
        "frames_per_chat": round(sum(wave.frames.values()) / per_chat, 1),
        "token_frames_per_chat": round(wave.frames["token"] / per_chat, 1),
        "frames": dict(wave.frames),
        "distinct_answers": len(answers),
        "answer_chars": len(next(iter(answers))) if answers else 0,
        "completion_tokens": sorted({e["usage"]["completion_tokens"] for e in done}),
        "client_ttft": latency_ms([t - wave.sent[r] for r, t in wave.first_token.items()]),
        "client_total": latency_ms([wave.ended[r] - wave.sent[r] for r in done_ids]),
        "server_ttft_p50_ms": statistics.median(server_ttft) if server_ttft else None,
        **usage,
    }


async def measure_storm(
    label: str, chatd: Process, sim: Process, n: int, connections: int
) -> dict[str, Any]:
    """Warm up, then two waves of ``n`` identical chats over ``connections`` WebSockets,
    the second right after the first."""
    sim_control = sim.listening["url"].removesuffix("/v1")
    async with (
        httpx.AsyncClient(base_url=sim_control, timeout=10) as sim_http,
        contextlib.AsyncExitStack() as stack,
    ):
        sockets = await open_connections(stack, chatd.listening["ws_url"], connections)
        # Warm-up on other (unique) texts: code paths, upstream pool, sockets.
        await storm_wave(
            sockets, [(f"warm-{c}", unique_chit_chat(800_000 + c)) for c in range(connections)]
        )
        waves = []
        for number in (1, 2):
            before = await sim_requests(sim_http)
            usage = Usage(chatd, sim)
            usage.start()
            chats = [(f"{label}-w{number}-{k}", STORM_MESSAGE) for k in range(n)]
            wave = await storm_wave(sockets, chats)
            spent = usage.stop()
            calls = await sim_requests(sim_http) - before
            waves.append(wave_result(wave, calls, usage_report(spent)))
    return {"label": label, "waves": waves}


def storm_env(n: int, sharing: bool) -> dict[str, str]:
    """chatd settings for a storm of ``n``: limits raised so nothing is refused, and shared
    flights and the answer cache both on (the defaults) or both off."""
    on = "true" if sharing else "false"
    return {
        "CHATD_LIMITS_LLM_STREAMS": str(max(1000, 2 * n)),
        "CHATD_LIMITS_MAX_QUEUE": str(max(1000, 4 * n)),
        "CHATD_LIMITS_MAX_REQUESTS_PER_CONNECTION": str(max(64, 2 * n)),
        "CHATD_CACHE_ENABLED": on,
        "CHATD_FLIGHTS_ENABLED": on,
    }


# --- report -----------------------------------------------------------------------------


def verdicts(breaker: Mapping[str, Any], storm: Mapping[str, Any], params: Params) -> list[str]:
    """One line per target: met or not, with the numbers."""
    lines = []
    runs = breaker["runs_by_connections"]
    few = runs[str(params.breaker_connections)]
    one = runs["1"]
    open_, floor = few["breaker_open"], few["bad_request"]
    met = open_["p99_ms"] < TARGET_P99_MS and not open_["unexpected"]
    lines.append(
        f"Error with the LLM breaker open, {open_['n']} chats over "
        f"{params.breaker_connections} connections (p99 < {TARGET_P99_MS:g} ms): "
        f"**{'met' if met else 'not met'}**: p50 {open_['p50_ms']} / p95 {open_['p95_ms']} / "
        f"p99 {open_['p99_ms']} ms ({open_['unexpected']} unexpected replies); on one "
        f"connection p99 {one['breaker_open']['p99_ms']} ms; bad_request floor p99 "
        f"{floor['p99_ms']} ms ({params.breaker_connections} connections), "
        f"{one['bad_request']['p99_ms']} ms (one)"
    )
    quiet = breaker["sim_requests_while_open"]
    lines.append(
        f"No LLM calls once the breaker is open: **{'met' if quiet == 0 else 'not met'}**: "
        f"the simulator saw {quiet} requests over the measurement "
        f"({breaker['sim_requests_to_open']} to open it, "
        f"{len(breaker['opening_chats'])} chats)"
    )
    codes = [breaker[k]["status_code"] for k in ("readyz_open", "readyz_after")]
    lines.append(
        f"/readyz 503 while the breaker is open: "
        f"**{'met' if all(c == 503 for c in codes) else 'not met'}**: {codes[0]} once open, "
        f"{codes[1]} after the measurement (200 expected before: "
        f"{breaker['readyz_before']['status_code']})"
    )
    n = params.storm_n
    for config in storm["configs"]:
        w1, w2 = config["waves"]
        expected = (1, 0) if config["label"] == "on" else (n, n)
        got = (w1["upstream_calls"], w2["upstream_calls"])
        errors = sum(w1["errors"].values()) + sum(w2["errors"].values())
        ok = got == expected and errors == 0
        lines.append(
            f"Storm of {n} identical chats, flights and cache {config['label']} (expect "
            f"{expected[0]} then {expected[1]} upstream calls): "
            f"**{'met' if ok else 'not met'}**: {got[0]} then {got[1]} calls, {errors} errors; "
            f"wave 1 {w1['shared']} shared / {w1['cached']} cached, wave 2 {w2['shared']} "
            f"shared / {w2['cached']} cached; TTFT p50 {w1['client_ttft'].get('p50_ms')} / "
            f"{w2['client_ttft'].get('p50_ms')} ms; chatd CPU {w1['chatd_cpu_s']} / "
            f"{w2['chatd_cpu_s']} s"
        )
    return lines


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p = result["params"]
    breaker = result["breaker"]
    storm = result["storm"]
    rows = []
    for connections, run in breaker["runs_by_connections"].items():
        for kind, r in run.items():
            rows.append(
                f"| {kind} | {connections} | {r['n']} | **{r['p50_ms']}** | {r['p95_ms']} "
                f"| **{r['p99_ms']}** | {r['p99_9_ms']} | {r['max_ms']} | {r['mean_ms']} "
                f"| {r['at_or_over_target']} | {r['chatd_cpu_us_per_frame']} "
                f"| {r['chatd_cpu_busy']:.0%} | {r['client_cpu_busy']:.0%} "
                f"| {r['machine_cores_busy']} | {r['codes']} |"
            )
    opening = "\n".join(
        f"{i}. {o['code']}: {o['message']}" for i, o in enumerate(breaker["opening_chats"], 1)
    )
    storm_rows = []
    for config in storm["configs"]:
        for number, w in enumerate(config["waves"], 1):
            t, d = w["client_ttft"], w["client_total"]
            storm_rows.append(
                f"| {config['label']} | {number} | {w['chats']} | **{w['upstream_calls']}** "
                f"| {w['done']} | {w['shared']} | {w['cached']} | {w['errors'] or 0} "
                f"| {w['distinct_answers']} | {w['frames_per_chat']} | {t.get('p50_ms')} "
                f"| {t.get('p95_ms')} | {t.get('max_ms')} | {d.get('p50_ms')} | {d.get('p95_ms')} "
                f"| {w['chatd_cpu_s']} | {w['wall_s']} | {w['sim_cpu_s']} | {w['client_cpu_s']} "
                f"| {w['machine_cores_busy']} |"
            )
    verdict_lines = "\n".join(f"- {line}" for line in result["verdicts"])
    source = result["chatd"]
    measured = provenance_markdown(source)
    ready = breaker["readyz_open"]["body"]
    return (
        "# Resilience: failing fast with the LLM down, a storm of identical questions\n\n"
        f"`{result['command']}` ({result['elapsed_s']} s); {measured}. chatd and the "
        "simulated LLM each run in their own process, this client (Python, "
        "trio-websocket) on loopback, all on one shared machine: client-measured times "
        "include the client's own CPU and scheduling.\n\n"
        f"## Verdicts\n\n{verdict_lines}\n\n"
        "## 1. LLM down, breaker open\n\n"
        f"chatd with `CHATD_LLM_RETRIES=0`, `CHATD_BREAKERS_LLM_FAILURE_THRESHOLD="
        f"{p['failure_threshold']}`, `CHATD_BREAKERS_LLM_OPEN_TIMEOUT_S="
        f"{p['open_timeout_s']:g}`; the simulator answers every completion with HTTP 503. "
        f"Chats sent one at a time until the breaker refused one "
        f"({len(breaker['opening_chats'])} chats, {breaker['sim_requests_to_open']} "
        f"simulator requests):\n\n{opening}\n\n"
        f"`/readyz` once open: HTTP {breaker['readyz_open']['status_code']}, status "
        f"`{ready.get('status')}`, llm breaker `{ready['dependencies']['llm']['breaker']}`; "
        f"before the fault: HTTP {breaker['readyz_before']['status_code']}. Simulator "
        f"requests during everything below: **{breaker['sim_requests_while_open']}**.\n\n"
        f"Then, after {p['breaker_warmup']} warm-up frames of each kind, closed loop: each "
        "connection sends the next frame when the previous one's terminal event is in. "
        "Time is from sending `chat` to receiving its `error` (an `accepted` comes first "
        "for `breaker_open`; `bad_request` is refused by the connection's reader before "
        "any pipeline work, so it is the floor for an error frame's round trip through "
        "chatd). The two kinds alternate in blocks (ABBA). Every `breaker_open` chat has "
        "a unique text, so none shares another's flight. chatd CPU is utime+stime per "
        "frame; *busy* is CPU seconds per wall second; *machine cores busy* counts every "
        f"process on the machine ({result['machine']['nproc']} cores), ours and anyone "
        "else's, so a value well above chatd + client busy means something else competed.\n\n"
        "| frame | connections | n | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | mean ms "
        f"| ≥ {TARGET_P99_MS:g} ms | chatd µs/frame | chatd busy | client busy "
        "| machine cores busy | codes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "## 2. Storm of identical questions\n\n"
        f"Each configuration: its own chatd and its own simulator (ttft "
        f"{p['storm_ttft_ms']:g} ms, {p['storm_tokens_per_s']:g} tokens/s). "
        f'{p["storm_n"]} chats of "{STORM_MESSAGE}" sent at once over '
        f"{p['storm_connections']} connections (round robin), then the same again as "
        "soon as the last one ended. *on* is the defaults (shared flights and answer cache "
        "on); *off* has `CHATD_FLIGHTS_ENABLED=false` and `CHATD_CACHE_ENABLED=false`. "
        f"Both with `CHATD_LIMITS_LLM_STREAMS`, `CHATD_LIMITS_MAX_QUEUE` and "
        "`CHATD_LIMITS_MAX_REQUESTS_PER_CONNECTION` raised so nothing is refused. "
        "*Calls* are the simulator's `requests` over the wave; *shared* and *cached* come "
        "from the `done` events; TTFT is client-measured, `chat` sent to first `token`; "
        "*done* is `chat` sent to `done`. One warm-up chat per connection (unique text) "
        "came before.\n\n"
        "| config | wave | chats | calls | done | shared | cached | errors | distinct "
        "answers | frames/chat | TTFT p50 ms | TTFT p95 ms | TTFT max ms | done p50 ms "
        "| done p95 ms | chatd CPU s | wall s | sim CPU s | client CPU s "
        "| machine cores busy |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(storm_rows)
        + "\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


# --- main -------------------------------------------------------------------------------


async def run(params: Params, rigs: Mapping[str, Rig]) -> dict[str, Any]:
    breaker = await measure_breaker(rigs["breaker"], params)
    configs = [
        await measure_storm(
            label, rigs[label].server, rigs[label].sim, params.storm_n, params.storm_connections
        )
        for label in ("on", "off")
    ]
    return {"breaker": breaker, "storm": {"configs": configs}}


def main() -> None:
    parser = script_parser(__doc__, "a short run (well under a minute)", chatd_path=True)
    parser.add_argument(
        "--breaker-chats", type=int, help="timed frames per kind and concurrency (2000; quick 200)"
    )
    parser.add_argument(
        "--connections", type=int, default=4, help="connections of the breaker measurement"
    )
    parser.add_argument("--storm-n", type=int, help="identical chats per wave (500; quick 100)")
    parser.add_argument(
        "--storm-connections", type=int, default=10, help="connections the storm is sent over"
    )
    args = parser.parse_args()
    params = params_from(args)
    chatd_path: Path = args.chatd_path.resolve()
    record = RunRecord.start(__file__, chatd_path)
    # A simulator and a chatd for the breaker, and one of each per storm configuration,
    # all started before measuring and all killed after.
    chatd_env = {
        "breaker": {
            "CHATD_LLM_RETRIES": "0",
            "CHATD_BREAKERS_LLM_FAILURE_THRESHOLD": str(params.failure_threshold),
            "CHATD_BREAKERS_LLM_OPEN_TIMEOUT_S": f"{params.open_timeout_s:g}",
        },
        "on": storm_env(params.storm_n, sharing=True),
        "off": storm_env(params.storm_n, sharing=False),
    }
    with contextlib.ExitStack() as stack:
        rigs = {
            label: stack.enter_context(
                rig_running(label, chatd_path, params.storm_ttft_ms, params.storm_tokens_per_s, env)
            )
            for label, env in chatd_env.items()
        }
        measured = trio.run(run, params, rigs)
    result = record.result(
        "resilience: fail-fast with the LLM breaker open; storm of identical chats",
        params,
        measured,
    )
    result["verdicts"] = verdicts(result["breaker"], result["storm"], params)
    name = "resilience" + ("-quick" if params.quick else "")
    write_results(RESULTS, name, result, markdown(result))


if __name__ == "__main__":
    main()
