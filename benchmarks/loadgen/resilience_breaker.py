"""The LLM down and chatd's breaker open, its parts: the kinds of chat chatd answers with an
error, their timed round trips in ABBA blocks over a set of connections, each kind's figures
against the target, and the chats that open the breaker first."""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection

from loadgen.chat import Reply, ask
from loadgen.cpu import Usage
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import LATENCY_FIGURES, latency_ms
from loadgen.resilience_figures import usage_report
from loadgen.rig import Rig

__all__ = [
    "BLOCKS",
    "BREAKER_OPEN_TEXT",
    "KINDS",
    "TARGET_P99_MS",
    "FrameKind",
    "error_blocks",
    "error_report",
    "error_round_trips",
    "open_the_breaker",
]

TARGET_P99_MS = 5.0
"""The target: an error frame's p99 round trip with the breaker open, in ms."""
BREAKER_OPEN_TEXT = "circuit breaker is open"
BLOCKS = 4
"""Measured blocks per frame kind and concurrency, the kinds taking turns (ABBA) so that
drift in the machine's load falls on both alike."""


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
        **latency_ms(seconds, LATENCY_FIGURES, digits=3),
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
