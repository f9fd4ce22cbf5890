"""The comparisons issue 6 asks for, measured by the benchmarks that own them, with fresh
processes each: flights and the answer cache on against off (``bench_resilience``), Path B
against Path A TTFT (``bench_pipeline``), request logs on against off
(``bench_observability``). This module sizes them, runs them and keeps the target's figures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
from bench_observability import Params as LogParams
from bench_observability import configs_for, run_end_to_end
from bench_pipeline import measure_ttft
from bench_resilience import measure_storm, storm_env
from loadgen.rig import rig_running

__all__ = ["logging_on_off", "path_ttft", "storm_on_off"]

LOG_FIGURES = ("requests", "chatd_cpu_us_per_request", "chatd_cpu_us_per_request_by_round",
               "log_lines_per_request", "request_p50_ms", "request_p95_ms", "chatd_cpu_busy",
               "machine_cores_busy", "env")  # fmt: skip


def storm_on_off(chatd_path: Path, n: int, connections: int) -> dict[str, Any]:
    """``n`` identical chats at once, twice, with flights and cache on, then off."""
    configs = {}
    for label, sharing in (("on", True), ("off", False)):
        env = storm_env(n, sharing)
        with rig_running(f"storm-{label}", chatd_path, 300, 40, env) as rig:
            configs[label] = trio.run(measure_storm, label, rig.server, rig.sim, n, connections)
            configs[label]["chatd_env"] = env
    return {"n": n, "connections": connections, "configs": configs}


def path_ttft(
    chatd_path: Path, rounds: int, ttft_ms: float = 300, tps: float = 40
) -> dict[str, Any]:
    """Client TTFT of Path B and of two Path A questions, ``rounds`` each."""
    with rig_running("paths", chatd_path, ttft_ms, tps) as rig:
        result = trio.run(measure_ttft, rig.ws_url, rounds, ttft_ms, tps)
    return {"rounds": rounds, "ttft_ms": ttft_ms, "tokens_per_s": tps, **result}


def logging_on_off(chatd_path: Path, connections: int, chats: int, rounds: int) -> dict[str, Any]:
    """chatd CPU per request and request latency with JSON request logs on and off."""
    params = LogParams(
        quick=False, connections=connections, chats_per_connection=chats, rounds=rounds,
        sim_ttft_ms=20.0, sim_tokens_per_s=500.0, include_text=False, control=False,
        profile=False, profile_rounds=0, micro_requests=0, micro_repeats=0, metrics_calls=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="targets-logging-") as tmp:
        configs = configs_for(Path(tmp), include_text=False, control=False)
        measured = run_end_to_end(params, configs, chatd_path, Path(tmp))
    by_label = {label: {k: c[k] for k in LOG_FIGURES} for label, c in measured["configs"].items()}
    on, off = (by_label[label]["chatd_cpu_us_per_request"] for label in ("logs-on", "logs-off"))
    return {
        "connections": connections,
        "chats_per_connection": chats,
        "rounds": rounds,
        "sim": {"ttft_ms": params.sim_ttft_ms, "tokens_per_s": params.sim_tokens_per_s},
        "configs": by_label,
        "cpu_on_over_off": round(on / off, 3),
        "cpu_on_minus_off_us": round(on - off, 1),
    }
