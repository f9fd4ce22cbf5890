"""The scale scenario's rounds: closed-loop users asking unique chit-chat questions of one
deployment for a round, what a round used (answers, wall and CPU time, Redis commands) and
its figures, and the whole measurement of one process against two, saturating then light."""

from __future__ import annotations

import collections
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection

from loadgen.chat import Replies, ask, open_connections
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import percentile
from loadgen.scale_rig import Deployment, Rig

__all__ = [
    "CHAT_TIMEOUT_S",
    "IDLE_S",
    "ROUND_KEYS",
    "Round",
    "measure_scale",
    "run_round",
    "summary",
    "user",
]

CHAT_TIMEOUT_S = 60.0
IDLE_S = 2.0
ROUND_KEYS = ("wall_s", "answers_per_s", "tokens_per_s", "chatd_cores_busy", "machine_cores_busy")


@attrs.frozen
class Round:
    """What one deployment's users did in one round, or in several summed."""

    replies: Replies = attrs.field(factory=Replies)
    seconds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """``wall`` and the CPU of each of :meth:`Rig.clocks`, from the start to the last answer."""
    redis_commands: collections.Counter[str] = attrs.field(factory=collections.Counter)

    @classmethod
    def total(cls, rounds: Iterable[Round]) -> Round:
        total = cls()
        for r in rounds:
            total.replies.merge(r.replies)
            total.seconds.update(r.seconds)
            total.redis_commands.update(r.redis_commands)
        return total

    def figures(self, sim_ttft_ms: float) -> dict[str, Any]:
        t, s, wall = self.replies, self.seconds, self.seconds["wall"]
        by_process = [v for name, v in s.items() if name.startswith("chatd")]
        chatd, rig = sum(by_process), {name: s[name] for name in ("sim", "redis", "client")}
        rig_total, answers, commands = sum(rig.values()), max(1, t.answers), +self.redis_commands
        overhead = [ttft * 1000 - sim_ttft_ms for ttft in t.ttft_s] or [float("nan")]
        server_overhead = [ms - sim_ttft_ms for ms in t.server_ttft_ms] or [float("nan")]

        def cores(cpu_s: float) -> float:
            return round(cpu_s / wall, 2)

        return {
            "wall_s": round(wall, 3),
            "answers": t.answers,
            "tokens": t.tokens,
            "token_frames": t.token_frames,
            "errors": sum(t.errors.values()),
            "error_codes": dict(t.errors),
            "cached": t.cached,
            "shared": t.shared,
            "answers_per_s": round(t.answers / wall, 1),
            "tokens_per_s": round(t.tokens / wall),
            "ttft_overhead_p50_ms": round(statistics.median(overhead), 1),
            "ttft_overhead_p95_ms": round(percentile(overhead, 95), 1),
            "server_ttft_overhead_p50_ms": round(statistics.median(server_overhead), 1),
            "server_ttft_overhead_p95_ms": round(percentile(server_overhead, 95), 1),
            "chatd_cpu_s": round(chatd, 3),
            "chatd_ms_per_answer": round(chatd / answers * 1000, 2),
            "redis_commands_per_answer": round(commands.total() / answers, 1),
            "redis_commands_per_answer_top": [
                [name, round(n / answers, 2)] for name, n in commands.most_common(6)
            ],
            "chatd_cpu_s_per_1000_tokens": round(chatd / max(1, t.tokens) * 1000, 4),
            "chatd_cores_busy": cores(chatd),
            "chatd_cores_busy_by_process": [cores(c) for c in by_process],
            "rig_cores_busy": {name: cores(v) for name, v in rig.items()},
            "machine_cores_busy": cores(s["machine"]),
            "machine_cores_stolen": cores(s["stolen"]),
            "rig_share_of_machine": round(rig_total / max(1e-9, s["machine"]), 3),
            "chatd_share_of_machine": round(chatd / max(1e-9, s["machine"]), 3),
            "unattributed_cores_busy": cores(s["machine"] - chatd - rig_total),
        }


async def user(
    ws: WebSocketConnection, questions: Iterator[int], stop_at: float, replies: Replies
) -> None:
    """Ask unique chit-chat questions one after another until ``stop_at``; the last one is
    read to its end."""
    while time.perf_counter() < stop_at:
        n = next(questions)
        replies.add(await ask(ws, f"q{n}", unique_chit_chat(n), timeout_s=CHAT_TIMEOUT_S))


async def run_round(
    deployment: Deployment,
    sockets: Sequence[WebSocketConnection],
    seconds: float,
    questions: Iterator[int],
    rig: Rig,
) -> Round:
    """Every user on ``sockets`` asks for ``seconds``."""
    commands0, clocks0 = rig.redis_commands(), rig.clocks(deployment.pids)
    done = Round()
    wall0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(user, ws, questions, wall0 + seconds, done.replies)
    done.seconds["wall"] = time.perf_counter() - wall0
    done.seconds.update({k: v - clocks0[k] for k, v in rig.clocks(deployment.pids).items()})
    done.redis_commands.update(rig.redis_commands() - commands0)
    done.redis_commands["info"] -= 1  # our own reading
    return done


def summary(
    deployment: Deployment, users: int, rounds: Sequence[Round], sim_ttft_ms: float
) -> dict[str, Any]:
    """A deployment's figures over its rounds at one load, and a few of them by round."""
    by_round = [r.figures(sim_ttft_ms) for r in rounds]
    return {
        "label": deployment.label,
        "processes": deployment.workers,
        "command": f"chatd serve --workers {deployment.workers}",
        "users": users,
        "rounds": [{key: figures[key] for key in ROUND_KEYS} for figures in by_round],
        **Round.total(rounds).figures(sim_ttft_ms),
    }


Load = tuple[str, int, int, float]
"""A phase of rounds: its name, users per deployment, rounds each, seconds a round."""


async def measure_scale(
    deployments: Sequence[Deployment], rig: Rig, *, loads: Sequence[Load], sim_ttft_ms: float
) -> dict[str, Any]:
    """Open every connection first, warm up, then alternate the deployments' rounds
    (order reversed every other round), a phase of each of ``loads`` in turn (the first
    is the saturating one the ratios compare)."""
    questions = itertools.count()
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            d.label: await open_connections(stack, d.ws_url, max(load[1] for load in loads))
            for d in deployments
        }
        for d in deployments:  # pools, connections to Redis and the simulator
            await run_round(d, sockets[d.label], 2.0, questions, rig)
        idle0 = {d.label: d.cpu_seconds() for d in deployments}
        await trio.sleep(IDLE_S)
        idle = {d.label: round((d.cpu_seconds() - idle0[d.label]) / IDLE_S, 3) for d in deployments}
        phases = {}
        for phase, users, rounds, seconds in loads:
            done: dict[str, list[Round]] = {d.label: [] for d in deployments}
            for round_no in range(rounds):
                for d in deployments if round_no % 2 == 0 else deployments[::-1]:
                    sock = sockets[d.label][:users]
                    done[d.label].append(await run_round(d, sock, seconds, questions, rig))
            phases[phase] = [summary(d, users, done[d.label], sim_ttft_ms) for d in deployments]
    one, two = phases[loads[0][0]]
    return {
        "phases": phases,
        "ratio_answers_per_s": round(two["answers_per_s"] / one["answers_per_s"], 3),
        "ratio_tokens_per_s": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "ratio_by_round": [
            round(b["answers_per_s"] / a["answers_per_s"], 3)
            for a, b in zip(one["rounds"], two["rounds"], strict=True)
        ],
        # Each of two chatd processes as busy as the one was, at the CPU per token
        # measured with two: what two cores free of the rig would give.
        "ratio_implied_by_cpu": round(
            2 * one["chatd_cpu_s_per_1000_tokens"] / two["chatd_cpu_s_per_1000_tokens"], 2
        ),
        "idle_chatd_cores_busy": idle,
        "questions_asked": next(questions),
    }
