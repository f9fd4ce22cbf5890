"""The floor and the capacity: chatd's CPU per streamed token against the bare relay's.

The same load (N users asking chit-chat back to back) goes to chatd and to
``benchmarks/relay.py``, each with a fresh simulator, in rounds that alternate the order so
drift in the machine's load falls on both. CPU per token is the server's utime + stime over
the users' run per LLM token; the capacity it implies is one core's worth of tokens per second
and, over the per-stream rate, of such streams.
"""

from __future__ import annotations

import collections
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
    total = {k: float(sum(r[k] for r in runs)) for k in ("tokens", "chatd_cpu_s", "wall_s")}
    tokens, cpu_s, wall_s = max(1.0, total["tokens"]), total["chatd_cpu_s"], total["wall_s"]
    token_frames = sum(r["token_frames"] for r in runs)
    errors: collections.Counter[str] = collections.Counter()
    for r in runs:
        errors.update(r["errors_by_code"])
    return {
        "runs": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "answered": sum(r["answered"] for r in runs),
        "errors_by_code": dict(errors),
        "tokens": int(total["tokens"]),
        "token_frames": token_frames,
        "tokens_per_token_frame": round(tokens / max(1.0, token_frames), 2),
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 2),
        "cpu_busy": round(cpu_s / max(1e-9, wall_s), 3),
        "us_per_token": round(cpu_s / tokens * 1e6, 1),
        "us_per_token_by_run": [
            round(r["chatd_cpu_s"] / max(1, r["tokens"]) * 1e6, 1) for r in runs
        ],
        "achieved_tokens_per_s": round(tokens / max(1e-9, wall_s), 1),
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


def floor_and_capacity(chatd_path: Path, plan: Plan, rounds: int) -> dict[str, Any]:
    """``rounds`` of chit-chat at ``plan`` against the relay and chatd, alternating."""
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SERVERS}
    for round_no in range(rounds):
        for server in SERVERS if round_no % 2 == 0 else SERVERS[::-1]:
            runs[server].append(run_scenario(SCENARIOS["chitchat"], plan, chatd_path, server))
    servers = {s: per_token(runs[s]) for s in SERVERS}
    chatd_us, relay_us = servers["chatd"]["us_per_token"], servers["relay"]["us_per_token"]
    return {
        "users": plan.users,
        "tokens_per_s_each": plan.tokens_per_s,
        "ttft_ms": plan.ttft_ms,
        "duration_s": plan.duration_s,
        "ramp_s": plan.ramp_s,
        "rounds": rounds,
        "demanded_tokens_per_s": round(plan.users * plan.tokens_per_s),
        "servers": servers,
        "chatd_over_relay": round(chatd_us / max(relay_us, 1e-9), 2),
        "chatd_capacity": capacity(chatd_us, plan.tokens_per_s),
        "relay_capacity": capacity(relay_us, plan.tokens_per_s),
        "samples": {s: runs[s][0]["samples"] for s in SERVERS},  # the first run's, for the plot
    }
