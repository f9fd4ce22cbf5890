"""Part 2 of ``bench_pipeline.py``: the load rounds, and one chatd configuration's tally.

Every connection asks its chit-chat questions (direct path, each asked once only) one after
another, the connections side by side; a :class:`Tally` sums one configuration's rounds and
turns them into CPU per streamed token and the latency under that load.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from trio_websocket import WebSocketConnection

from loadgen.chat import Replies, ask, sum_over_connections
from loadgen.cpu import busy_shares
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import PIPELINE_FIGURES, latency_ms
from loadgen.processes import Process

__all__ = ["Tally", "chat_worker", "load_round"]


async def chat_worker(
    ws: WebSocketConnection, index: int, round_no: int, chats: int, totals: Replies
) -> None:
    """One connection: ``chats`` chit-chat requests, one after another."""
    for k in range(chats):
        message = unique_chit_chat((round_no + 2) * 1_000_000 + index * 1000 + k)
        totals.add(await ask(ws, f"r{round_no}-{k}", message))


async def load_round(sockets: Sequence[WebSocketConnection], round_no: int, chats: int) -> Replies:
    """Every connection's ``chats`` requests, the connections side by side."""
    return await sum_over_connections(sockets, chat_worker, round_no, chats, totals=Replies())


@attrs.define
class Tally:
    """One chatd configuration and its load rounds, summed."""

    label: str
    merge_ms: float
    connections: int
    chats_per_connection: int
    process: Process = attrs.field(init=False)
    """Its chatd, once started."""
    spent: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """Wall time and CPU over the rounds, in seconds, keyed as :meth:`Usage.stop` has them."""
    totals: Replies = attrs.field(factory=Replies)
    per_token_us: list[float] = attrs.field(factory=list)
    """chatd's CPU per token round by round, in µs."""

    def add(self, totals: Replies, spent: Mapping[str, float]) -> None:
        """Sum one round's replies and what it took."""
        self.spent.update(spent)
        self.totals.merge(totals)
        self.per_token_us.append(round(spent["chatd_cpu_s"] / max(1, totals.tokens) * 1e6, 1))

    def result(self, tokens_per_s: float, ttft_ms: float) -> dict[str, Any]:
        t, spent, wall = self.totals, self.spent, self.spent["wall_s"]

        def chatd_cpu_per(count: int, unit: float = 1e6, digits: int = 1) -> float:
            return round(spent["chatd_cpu_s"] / max(1, count) * unit, digits)

        # The simulator alone: first token at ttft, then one every 1/rate.
        ideal_s = ttft_ms / 1000 + (t.tokens / max(1, t.answers) - 1) / tokens_per_s
        durations = latency_ms(t.durations, PIPELINE_FIGURES)
        shares = busy_shares(spent)  # chatd's first, the others in their place further on
        return {
            "label": self.label,
            "token_merge_ms": self.merge_ms,
            "connections": self.connections,
            "chats_per_connection_per_round": self.chats_per_connection,
            "chats": t.answers,
            "errors": t.errors.total(),
            "cached": t.cached,
            "shared": t.shared,
            "paths": dict(t.paths),
            "sim_tokens": t.tokens,
            "token_frames": t.token_frames,
            "all_frames": t.frames,
            "sim_tokens_per_token_frame": round(t.tokens / max(1, t.token_frames), 2),
            "wall_s": round(wall, 3),
            "demanded_tokens_per_s": round(self.connections * tokens_per_s),
            "achieved_tokens_per_s": round(t.tokens / wall),
            "chatd_cpu_s": round(spent["chatd_cpu_s"], 3),
            "chatd_cpu_busy": shares.pop("chatd_cpu_busy"),
            "chatd_us_per_sim_token": chatd_cpu_per(t.tokens),
            "chatd_us_per_token_frame": chatd_cpu_per(t.token_frames),
            "chatd_us_per_frame": chatd_cpu_per(t.frames),
            "chatd_ms_per_chat": chatd_cpu_per(t.answers, 1e3, 3),
            "chatd_us_per_sim_token_by_round": self.per_token_us,
            **shares,
            "chat_duration_p50_ms": durations["p50_ms"],
            "chat_duration_p95_ms": durations["p95_ms"],
            "chat_duration_ideal_ms": round(ideal_s * 1000, 1),
            "server_ttft_p50_ms": round(statistics.median(t.server_ttft_ms), 1),
        }
