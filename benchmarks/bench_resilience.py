"""Resilience end to end: failing fast with the LLM down, and a storm of identical questions.

chatd runs as its own process (``python -m chatd serve --port 0``) against the
simulated LLM in another (``python -m chatd sim-llm --port 0``); this process
is the client, over trio-websocket on loopback. Two measurements in one run:

1. **LLM down, breaker open.** A chatd with ``llm.retries`` 0 and an LLM
   breaker that opens after 5 consecutive failures and stays open for 600 s;
   the simulator answers every completion with HTTP 503. Chats go one at a
   time until one is refused with "circuit breaker is open"; then chats are
   sent closed-loop (each connection sends the next once the last one's
   ``error`` is in), on one connection and on a few side by side, and the
   client times ``chat`` sent to its ``error`` received. As a floor for "an
   error frame's round trip through chatd", ``chat`` frames with a bad
   ``message`` (``bad_request``, refused by the reader before any pipeline
   work) are timed the same way, in alternating blocks with the others. The
   simulator's request count must not move once the breaker is open, and
   ``/readyz`` must answer 503. Target: p99 under 5 ms.
2. **A storm of identical questions.** Two chatd processes, each against its
   own simulator (ttft 300 ms, 40 tokens/s): one with shared flights and the
   answer cache on (the defaults), one with both off. Each gets N identical
   chats sent at once over a few connections, then, as soon as the last one
   ended, the same N again. Reported per configuration and wave: upstream
   calls (the simulator's ``requests``), ``shared``/``cached`` from ``done``,
   errors by code, client TTFT, chatd CPU. Expected: on, 1 call then 0; off,
   N then N.

Results go to benchmarks/results/resilience{,-quick}.{json,md}. Helpers for
processes and CPU readings come from the load generator's harness (``loadgen``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import math
import statistics
import sys
import tempfile
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
from loadgen.chat import ask, chat_frame, open_connections
from loadgen.cpu import Usage
from loadgen.processes import Process, log_tails_on_failure, start_chatd, start_sim
from loadgen.rig import sim_stats
from loadgen.script import RunRecord, provenance_markdown, script_parser
from machine import machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
TARGET_P99_MS = 5.0
BREAKER_OPEN_TEXT = "circuit breaker is open"
STORM_MESSAGE = "tell me a long story about the sea"
# Measured blocks per frame kind and concurrency, taken in turn (ABBA) so that
# drift in the machine's load falls on both kinds alike.
BLOCKS = 4


@attrs.frozen
class Params:
    """What one run does."""

    quick: bool
    failure_threshold: int
    open_timeout_s: float
    breaker_chats: int
    breaker_connections: int
    breaker_warmup: int
    storm_n: int
    storm_connections: int
    storm_ttft_ms: float
    storm_tokens_per_s: float


def latency_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/min/max/mean of seconds, in ms."""
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
    """Seconds rounded, plus each process's busy share and the machine's cores in use."""
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
    """The simulator's request count so far."""
    return (await sim_stats(sim))["requests"]


async def readyz(chatd: httpx.AsyncClient) -> dict[str, Any]:
    response = await chatd.get("/readyz")
    return {"status_code": response.status_code, "body": response.json()}


# --- 1. LLM down, breaker open ----------------------------------------------------------


@attrs.define
class ErrorSamples:
    """Round trips of one frame kind and what came back."""

    seconds: list[float] = attrs.field(factory=list)
    codes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    unexpected: list[dict[str, Any]] = attrs.field(factory=list)
    retry_after_ms: list[int] = attrs.field(factory=list)


@attrs.frozen
class FrameKind:
    """A chat that chatd answers with an error, and what that error should be."""

    name: str
    message: Callable[[], object]
    code: str
    text: str | None


# Numbers for unique_chit_chat across all connections and blocks of the run.
_message_numbers = itertools.count()


def breaker_message() -> str:
    # A text never sent before, so no two requests share a flight, even on two
    # connections at once: each goes the whole way to the breaker.
    return unique_chit_chat(next(_message_numbers))


def bad_message() -> int:
    """Not a text: chatd's reader refuses it before any pipeline work."""
    return 5


KINDS = (
    FrameKind("breaker_open", breaker_message, "upstream_unavailable", BREAKER_OPEN_TEXT),
    FrameKind("bad_request", bad_message, "bad_request", None),
)


async def error_round_trips(
    ws: WebSocketConnection, kind: FrameKind, prefix: str, first: int, count: int,
    samples: ErrorSamples,
) -> None:  # fmt: skip
    """``count`` chats of ``kind``, each sent once the previous one's error is in."""
    for k in range(first, first + count):
        reply = await ask(ws, f"{prefix}-{k}", kind.message(), timeout_s=30)
        samples.seconds.append(reply.duration_s)
        event = reply.terminal
        code = event.get("code", event["type"])
        samples.codes[code] += 1
        if code != kind.code or (kind.text and kind.text not in event.get("message", "")):
            samples.unexpected.append(event)
        if "retry_after_ms" in event:
            samples.retry_after_ms.append(event["retry_after_ms"])


def error_report(samples: ErrorSamples, spent: Mapping[str, float]) -> dict[str, Any]:
    """Latency, what came back, and CPU per frame of one kind."""
    waits = samples.retry_after_ms
    return {
        **latency_ms(samples.seconds),
        "at_or_over_target": sum(t * 1000 >= TARGET_P99_MS for t in samples.seconds),
        "codes": dict(samples.codes),
        "unexpected": len(samples.unexpected),
        "unexpected_examples": samples.unexpected[:3],
        "retry_after_ms_range": [min(waits), max(waits)] if waits else None,
        "chatd_cpu_us_per_frame": round(
            spent["chatd_cpu_s"] / max(1, len(samples.seconds)) * 1e6, 1
        ),
        **usage_report(spent),
    }


async def open_the_breaker(ws: WebSocketConnection, limit: int = 100) -> list[dict[str, Any]]:
    """Chats one at a time until one is refused by the open breaker; their errors."""
    seen = []
    for k in range(limit):
        reply = await ask(ws, f"opening-{k}", unique_chit_chat(900_000 + k), timeout_s=60)
        event = reply.terminal
        seen.append({key: event.get(key) for key in ("type", "code", "message")})
        if BREAKER_OPEN_TEXT in event.get("message", ""):
            return seen
    raise RuntimeError(f"the breaker did not open in {limit} chats: {seen[-3:]}")


async def measure_breaker(chatd: Process, sim: Process, params: Params) -> dict[str, Any]:
    """Open chatd's LLM breaker, then time error round trips with it open."""
    sim_url = sim.listening["url"].removesuffix("/v1")
    async with (
        httpx.AsyncClient(base_url=sim_url, timeout=10) as sim_http,
        httpx.AsyncClient(base_url=chatd.listening["url"], timeout=10) as chatd_http,
        contextlib.AsyncExitStack() as stack,
    ):
        ready_before = await readyz(chatd_http)
        fault = {"mode": "error", "status": 503}
        (await sim_http.post("/_sim/faults", json=fault)).raise_for_status()
        requests_before = await sim_requests(sim_http)
        url = chatd.listening["ws_url"]
        sockets = await open_connections(stack, url, params.breaker_connections)
        opening = await open_the_breaker(sockets[0])
        requests_at_open = await sim_requests(sim_http)
        ready_open = await readyz(chatd_http)

        for kind in KINDS:  # warm-up, not counted
            await error_round_trips(
                sockets[0], kind, f"warm-{kind.name}", 0, params.breaker_warmup, ErrorSamples()
            )

        runs: dict[str, dict[str, Any]] = {}
        for connections in sorted({1, params.breaker_connections}):
            samples = {kind.name: ErrorSamples() for kind in KINDS}
            spent: dict[str, collections.Counter[str]] = {
                kind.name: collections.Counter() for kind in KINDS
            }
            per_block = max(1, math.ceil(params.breaker_chats / BLOCKS / connections))
            for block in range(BLOCKS):
                order = KINDS if block % 2 == 0 else tuple(reversed(KINDS))
                for kind in order:
                    usage = Usage(chatd, sim)
                    usage.start()
                    async with trio.open_nursery() as nursery:
                        for c, ws in enumerate(sockets[:connections]):
                            nursery.start_soon(
                                error_round_trips, ws, kind, f"{kind.name}-{connections}-{c}",
                                block * per_block, per_block, samples[kind.name],
                            )  # fmt: skip
                    spent[kind.name].update(usage.stop())
            runs[str(connections)] = {
                name: error_report(samples[name], spent[name]) for name in samples
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


async def read_wave(ws: WebSocketConnection, ids: set[str], wave: Wave) -> None:
    """Read events until every request in ``ids`` has its terminal event."""
    left = set(ids)
    while left:
        event = orjson.loads(await ws.get_message())
        request_id = event.get("id")
        if request_id not in left:
            continue
        kind = event["type"]
        wave.frames[kind] += 1
        if kind == "token":
            wave.first_token.setdefault(request_id, time.perf_counter())
            wave.texts[request_id].append(event["text"])
        elif kind in ("done", "error"):
            wave.ended[request_id] = time.perf_counter()
            wave.terminal[request_id] = event
            left.discard(request_id)


async def connection_wave(ws: WebSocketConnection, frames: Sequence[tuple[str, str]],
                          wave: Wave) -> None:  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_wave, ws, {request_id for request_id, _ in frames}, wave)
        for request_id, frame in frames:
            wave.sent[request_id] = time.perf_counter()
            await ws.send_message(frame)


async def storm_wave(
    sockets: Sequence[WebSocketConnection], n: int, label: str, message: str
) -> Wave:
    """``n`` chats of ``message``, spread over ``sockets``, all sent at once."""
    frames: list[list[tuple[str, str]]] = [[] for _ in sockets]
    for k in range(n):
        request_id = f"{label}-{k}"
        frames[k % len(sockets)].append((request_id, chat_frame(request_id, message)))
    wave = Wave()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for ws, mine in zip(sockets, frames, strict=True):
                nursery.start_soon(connection_wave, ws, mine, wave)
    return wave


def wave_result(wave: Wave, calls: int, usage: Mapping[str, float]) -> dict[str, Any]:
    done = [e for e in wave.terminal.values() if e["type"] == "done"]
    errors = collections.Counter(e["code"] for e in wave.terminal.values() if e["type"] == "error")
    answers = collections.Counter(
        "".join(wave.texts[r]) for r, e in wave.terminal.items() if e["type"] == "done"
    )
    ttft = [wave.first_token[r] - wave.sent[r] for r in wave.first_token]
    total = [
        wave.ended[r] - wave.sent[r] for r in wave.terminal if wave.terminal[r]["type"] == "done"
    ]
    server_ttft = [e["timings"]["ttft_ms"] for e in done if e["timings"].get("ttft_ms") is not None]
    return {
        "chats": len(wave.sent),
        "upstream_calls": calls,
        "done": len(done),
        "shared": sum(bool(e.get("shared")) for e in done),
        "cached": sum(bool(e.get("cached")) for e in done),
        "finish_reasons": dict(collections.Counter(e["finish_reason"] for e in done)),
        "paths": dict(collections.Counter(e["path"] for e in done)),
        "errors": dict(errors),
        "error_examples": [e for e in wave.terminal.values() if e["type"] == "error"][:3],
        "frames_per_chat": round(sum(wave.frames.values()) / max(1, len(wave.sent)), 1),
        "token_frames_per_chat": round(wave.frames["token"] / max(1, len(wave.sent)), 1),
        "frames": dict(wave.frames),
        "distinct_answers": len(answers),
        "answer_chars": len(next(iter(answers))) if answers else 0,
        "completion_tokens": sorted({e["usage"]["completion_tokens"] for e in done}),
        "client_ttft": latency_ms(ttft),
        "client_total": latency_ms(total),
        "server_ttft_p50_ms": statistics.median(server_ttft) if server_ttft else None,
        **usage,
    }


async def measure_storm(
    label: str, chatd: Process, sim: Process, n: int, connections: int
) -> dict[str, Any]:
    """Warm up, then two waves of ``n`` identical chats over ``connections`` WebSockets,
    the second right after the first."""
    sim_url = sim.listening["url"].removesuffix("/v1")
    url = chatd.listening["ws_url"]
    async with (
        httpx.AsyncClient(base_url=sim_url, timeout=10) as sim_http,
        contextlib.AsyncExitStack() as stack,
    ):
        sockets = await open_connections(stack, url, connections)
        # Warm-up on other (unique) texts: code paths, upstream pool, sockets.
        warm = Wave()
        async with trio.open_nursery() as nursery:
            for c, ws in enumerate(sockets):
                frames = [(f"warm-{c}", chat_frame(f"warm-{c}", unique_chit_chat(800_000 + c)))]
                nursery.start_soon(connection_wave, ws, frames, warm)
        waves = []
        for number in (1, 2):
            before = await sim_requests(sim_http)
            usage = Usage(chatd, sim)
            usage.start()
            wave = await storm_wave(sockets, n, f"{label}-w{number}", STORM_MESSAGE)
            spent = usage.stop()
            calls = await sim_requests(sim_http) - before
            waves.append(wave_result(wave, calls, usage_report(spent)))
    return {"label": label, "waves": waves}


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


def params_from(args: argparse.Namespace) -> Params:
    quick = bool(args.quick)
    return Params(
        quick=quick,
        failure_threshold=5,
        open_timeout_s=600.0,
        breaker_chats=args.breaker_chats or (200 if quick else 2000),
        breaker_connections=args.connections,
        breaker_warmup=20 if quick else 100,
        storm_n=args.storm_n or (100 if quick else 500),
        storm_connections=args.storm_connections,
        storm_ttft_ms=300.0,
        storm_tokens_per_s=40.0,
    )


async def run(params: Params, processes: Mapping[str, Process]) -> dict[str, Any]:
    breaker = await measure_breaker(processes["chatd-breaker"], processes["sim-breaker"], params)
    configs = [
        await measure_storm(
            label,
            processes[f"chatd-{label}"],
            processes[f"sim-{label}"],
            params.storm_n,
            params.storm_connections,
        )
        for label in ("on", "off")
    ]
    return {"breaker": breaker, "storm": {"configs": configs}}


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


def start_all(params: Params, workdir: Path, chatd_path: Path,
              stack: contextlib.ExitStack) -> dict[str, Process]:  # fmt: skip
    """A simulator and a chatd for the breaker, and one of each per storm configuration."""
    chatd_env = {
        "breaker": {
            "CHATD_LLM_RETRIES": "0",
            "CHATD_BREAKERS_LLM_FAILURE_THRESHOLD": str(params.failure_threshold),
            "CHATD_BREAKERS_LLM_OPEN_TIMEOUT_S": f"{params.open_timeout_s:g}",
        },
        "on": storm_env(params.storm_n, sharing=True),
        "off": storm_env(params.storm_n, sharing=False),
    }
    processes: dict[str, Process] = {}
    for label, extra in chatd_env.items():
        sim = start_sim(workdir, chatd_path, params.storm_ttft_ms, params.storm_tokens_per_s,
                        stack, name=f"sim-{label}")  # fmt: skip
        processes[sim.name] = sim
        chatd = start_chatd(
            f"chatd-{label}", sim.listening["url"], workdir, chatd_path, stack, extra
        )
        processes[chatd.name] = chatd
    return processes


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
    name = "resilience" + ("-quick" if params.quick else "")
    record = RunRecord.start(__file__, chatd_path)
    with (
        tempfile.TemporaryDirectory(prefix="bench-resilience-") as tmp,
        contextlib.ExitStack() as stack,  # kills every process, whatever happens
    ):
        processes = start_all(params, Path(tmp), chatd_path, stack)
        with log_tails_on_failure(processes.values()):
            measured = trio.run(run, params, processes)
    result = record.result(
        "resilience: fail-fast with the LLM breaker open; storm of identical chats",
        params,
        measured,
    )
    result["verdicts"] = verdicts(result["breaker"], result["storm"], params)
    write_results(RESULTS, name, result, markdown(result))


if __name__ == "__main__":
    main()
