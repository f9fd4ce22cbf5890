"""Resilience end to end: failing fast with the LLM down, and a storm of identical questions.

1. The LLM answers HTTP 503 and chatd's breaker is open: a refused chat's round trip.
2. N identical chats at once, twice, with shared flights and the answer cache on, then off.

chatd and the simulated LLM run as processes of their own, this one is the client; the
report says how each figure is taken. ``python benchmarks/bench_resilience.py [--quick]``
writes benchmarks/results/resilience{,-quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.chat import open_connections
from loadgen.resilience_breaker import (
    KINDS,
    TARGET_P99_MS,
    error_blocks,
    error_round_trips,
    open_the_breaker,
)
from loadgen.resilience_figures import sim_requests
from loadgen.resilience_storm import measure_storm, storm_env
from loadgen.rig import Rig, rig_running, set_fault
from loadgen.script import RunRecord, script_parser
from machine import write_results
from reports.resilience import markdown

RESULTS = Path(__file__).parent / "results"


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


async def readyz(chatd: httpx.AsyncClient) -> dict[str, Any]:
    response = await chatd.get("/readyz")
    return {"status_code": response.status_code, "body": response.json()}


# --- 1. LLM down, breaker open ----------------------------------------------------------


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


# --- verdicts ---------------------------------------------------------------------------


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
