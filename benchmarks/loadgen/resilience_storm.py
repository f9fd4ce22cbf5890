"""A storm of identical questions: waves of one chat sent at once over several connections
and read to their ends (shared flights and the answer cache can answer them with one LLM
call), a wave's figures, and the chatd settings for a storm."""

from __future__ import annotations

import collections
import contextlib
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection

from loadgen.chat import chat_frame, open_connections
from loadgen.cpu import Usage
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import LATENCY_FIGURES, latency_ms
from loadgen.processes import Process
from loadgen.resilience_figures import sim_requests, usage_report

__all__ = ["STORM_MESSAGE", "Wave", "measure_storm", "storm_env", "storm_wave", "wave_result"]

STORM_MESSAGE = "tell me a long story about the sea"


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
    ttft = [t - wave.sent[r] for r, t in wave.first_token.items()]
    total = [wave.ended[r] - wave.sent[r] for r in done_ids]
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
        "client_ttft": latency_ms(ttft, LATENCY_FIGURES, digits=3),
        "client_total": latency_ms(total, LATENCY_FIGURES, digits=3),
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
