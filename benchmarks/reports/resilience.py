"""The report of ``bench_resilience.py``: its results as Markdown (pure), the error frames'
round trips with the LLM breaker open and the storm's waves, flights and cache on and off."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.resilience_breaker import TARGET_P99_MS
from loadgen.resilience_storm import STORM_MESSAGE
from loadgen.script import report_opening
from machine import machine_markdown

__all__ = ["markdown"]


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
    ready = breaker["readyz_open"]["body"]
    title = "Resilience: failing fast with the LLM down, a storm of identical questions"
    return (
        report_opening(title, result)
        + " chatd and the simulated LLM each run in their own process, this client (Python, "
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
