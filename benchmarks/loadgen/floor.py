"""The floor and the capacity: chatd's CPU per streamed token against the bare relay's.

The same load goes to chatd and to ``benchmarks/relay.py`` (each with its own
fresh simulator): N virtual users asking chit-chat questions back to back
(the ``direct`` path), so N streams at the simulator's rate are open at once.
Rounds alternate the order (relay, chatd; chatd, relay; ...) so drift in the
machine's load falls on both. CPU per token is the server's utime + stime
over the users' run divided by the LLM's tokens (``usage.completion_tokens``);
the capacity it implies is one core's worth of tokens per second, and that
over the per-stream rate: how many such streams one core could relay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.rig import Server
from loadgen.runner import Plan, run_scenario
from loadgen.scenarios import SCENARIOS

__all__ = ["capacity", "floor_and_capacity", "per_token"]

SERVERS: tuple[Server, ...] = ("relay", "chatd")


def per_token(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One server's runs summed: CPU per token and per frame, what was asked and answered."""

    def total(key: str) -> float:
        return float(sum(r[key] for r in runs))

    tokens = max(1.0, total("tokens"))
    errors: dict[str, int] = {}
    for r in runs:
        for code, n in r["errors_by_code"].items():
            errors[code] = errors.get(code, 0) + n
    return {
        "runs": len(runs),
        "requests": int(total("requests")),
        "answered": int(total("answered")),
        "errors_by_code": errors,
        "tokens": int(total("tokens")),
        "token_frames": int(total("token_frames")),
        "tokens_per_token_frame": round(tokens / max(1.0, total("token_frames")), 2),
        "cpu_s": round(total("chatd_cpu_s"), 3),
        "wall_s": round(total("wall_s"), 2),
        "cpu_busy": round(total("chatd_cpu_s") / max(1e-9, total("wall_s")), 3),
        "us_per_token": round(total("chatd_cpu_s") / tokens * 1e6, 1),
        "us_per_token_by_run": [
            round(r["chatd_cpu_s"] / max(1, r["tokens"]) * 1e6, 1) for r in runs
        ],
        "achieved_tokens_per_s": round(tokens / max(1e-9, total("wall_s")), 1),
        "overhead_p99_ms_by_run": [r["overhead"].get("p99_ms") for r in runs],
        "machine_cores_busy_by_run": [r["machine_cores_busy"] for r in runs],
    }


def capacity(us_per_token: float, stream_tokens_per_s: float) -> dict[str, float]:
    """What one core could relay at ``us_per_token``: tokens/s, and streams of the given rate."""
    tokens_per_s = 1e6 / max(us_per_token, 1e-9)
    return {
        "tokens_per_s_per_core": round(tokens_per_s),
        "streams_per_core": round(tokens_per_s / stream_tokens_per_s),
    }


def floor_and_capacity(
    chatd_path: Path,
    users: int,
    duration_s: float,
    ramp_s: float,
    rounds: int,
    ttft_ms: float = 300.0,
    tokens_per_s: float = 40.0,
    progress: bool = False,
) -> dict[str, Any]:
    """``rounds`` of the same load against the relay and chatd, alternating."""
    plan = Plan(users=users, duration_s=duration_s, ramp_s=ramp_s, think_s=0.0,
                ttft_ms=ttft_ms, tokens_per_s=tokens_per_s, progress=progress)  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SERVERS}
    for round_no in range(rounds):
        for server in SERVERS if round_no % 2 == 0 else SERVERS[::-1]:
            runs[server].append(run_scenario(SCENARIOS["chitchat"], plan, chatd_path, server))
    servers = {s: per_token(runs[s]) for s in SERVERS}
    chatd_us, relay_us = servers["chatd"]["us_per_token"], servers["relay"]["us_per_token"]
    return {
        "users": users,
        "tokens_per_s_each": tokens_per_s,
        "ttft_ms": ttft_ms,
        "duration_s": duration_s,
        "ramp_s": ramp_s,
        "rounds": rounds,
        "demanded_tokens_per_s": round(users * tokens_per_s),
        "servers": servers,
        "chatd_over_relay": round(chatd_us / max(relay_us, 1e-9), 2),
        "chatd_capacity": capacity(chatd_us, tokens_per_s),
        "relay_capacity": capacity(relay_us, tokens_per_s),
        # The first run of each, for the throughput and CPU plot.
        "samples": {s: runs[s][0]["samples"] for s in SERVERS},
    }
