"""The report of ``bench_scale.py``: its results as Markdown (pure), one chatd process
against two on Redis by load, where the machine's CPU went, and the thread-offload cost of a
Redis call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadgen.scale_rounds import IDLE_S
from loadgen.script import report_opening
from machine import machine_markdown

__all__ = ["SCALE_HEADER", "markdown", "scale_rows"]


def scale_rows(configs: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(
        f"| {c['processes']} | `{c['command']}` | {c['users']} | **{c['answers_per_s']}** "
        f"| {c['tokens_per_s']} | **{c['ttft_overhead_p50_ms']}** / {c['ttft_overhead_p95_ms']} "
        f"| {c['server_ttft_overhead_p50_ms']} / {c['server_ttft_overhead_p95_ms']} "
        f"| {c['chatd_cpu_s_per_1000_tokens']} | {c['chatd_ms_per_answer']} "
        f"| {c['chatd_cores_busy']} {c['chatd_cores_busy_by_process']} "
        f"| {c['redis_commands_per_answer']} | {c['errors']} {c['error_codes'] or ''} "
        f"| {c['cached']} / {c['shared']} |"
        for c in configs
    )


SCALE_HEADER = """\
| processes | started as | users | answers/s | tokens/s | TTFT overhead p50 / p95 ms (client) \
| TTFT overhead p50 / p95 ms (chatd) | chatd CPU s / 1,000 tokens | chatd CPU ms / answer \
| chatd cores busy [by process] | Redis commands / answer | errors | cached / shared |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, s, o, machine = result["params"], result["scale"], result["offload"], result["machine"]
    phases, n, lines = s["phases"], p["pipeline_commands"], "\n".join
    configs = [(phase, c) for phase in phases for c in phases[phase]]
    get = {
        (r["mode"], r["concurrency"], r["commands_per_call"]): r
        for r in o["rows"]
        if r["command"] == "GET"
    }
    sync_get, offload_get, piped = get["sync", 1, 1], get["offload", 1, 1], get["offload", 1, n]
    by_round = lines(
        f"- {c['processes']} process(es): {[r['answers_per_s'] for r in c['rounds']]} "
        f"answers/s, chatd cores busy {[r['chatd_cores_busy'] for r in c['rounds']]}, "
        f"machine cores busy {[r['machine_cores_busy'] for r in c['rounds']]}"
        for c in phases["saturating"]
    )
    commands = lines(
        f"- {phase}, {c['processes']} process(es): "
        + ", ".join(f"{name} {count}" for name, count in c["redis_commands_per_answer_top"])
        for phase, c in configs
    )
    machine_rows = lines(
        f"| {phase} | {c['processes']} | {c['machine_cores_busy']} | {c['chatd_cores_busy']} "
        f"| {c['rig_cores_busy']['sim']} | {c['rig_cores_busy']['client']} "
        f"| {c['rig_cores_busy']['redis']} | {c['rig_share_of_machine']:.0%} "
        f"| {c['unattributed_cores_busy']} | {c['machine_cores_stolen']} |"
        for phase, c in configs
    )
    offload_rows = lines(
        f"| {r['name']} | {r['concurrency']} | {r['calls']} | **{r['us_per_call']}** "
        f"| {r['us_per_command']} | {r['calls_per_s']} "
        f"| {r['latency_p50_us']} / {r['latency_p95_us']} | {r['cpu_us_per_call']} "
        f"| {r.get('offload_overhead_us', '')} | {r.get('offload_cpu_overhead_us', '')} |"
        for r in o["rows"]
    )
    by_repeat = lines(
        f"- {r['name']}, concurrency {r['concurrency']}: {r['us_per_call_by_repeat']} "
        f"({r['cpu_us_per_call_by_repeat']})"
        for r in o["rows"]
    )
    title = "Scale-out: 1 chatd process against 2 on Redis, and the cost of a Redis call"
    return f"""{report_opening(title, result)} \
Everything runs on this one machine: Redis, the simulated LLM, chatd and this load generator \
(Python, trio-websocket) share its {machine["nproc"]} cores. The machine is shared with other \
engineers' test runs and is noisy (load average {machine["loadavg_at_start"]} at the start, \
{result["loadavg_at_end"]} at the end): compare ratios from one run, not absolute figures \
across runs.

## Verdicts

{lines(f"- {line}" for line in result["verdicts"])}

## 1. One process against two, on one Redis

Simulator ttft {p["sim_ttft_ms"]:g} ms, {p["sim_tokens_per_s"]:g} tokens/s; chit-chat \
questions, answered directly (33–55 tokens), each asked once only, so no answer is cached or \
shared (checked: the last column). Both deployments run side by side on one Redis (prefixes of \
their own) and one simulator: `chatd serve --workers 1` is one process; `chatd serve \
--workers 2` is a supervisor and two workers listening on one port with SO_REUSEPORT, so the \
kernel spreads the connections. Closed loop, no think time: each user (one WebSocket \
connection, opened before the rounds) sends its next question when the last one is done. \
Saturating: {p["users"]} users per deployment, {p["rounds"]} rounds of {p["round_s"]:g} s \
each; light: {p["light_users"]} users, {p["light_rounds"]} rounds of {p["light_round_s"]:g} s; \
rounds alternate between the deployments, order reversed every other round, after a 2 s \
warm-up each. *TTFT overhead* is TTFT minus the simulator's {p["sim_ttft_ms"]:g} ms: \
client-measured (`chat` sent to first `token` frame, so queueing in chatd counts), and as chatd \
reports it (`timings.ttft_ms`). chatd CPU is utime+stime of every process of the deployment \
(supervisor included) over the rounds.

Saturating ({p["users"]} users):

{SCALE_HEADER}
{scale_rows(phases["saturating"])}

Light ({p["light_users"]} users; the kernel may not spread so few connections evenly):

{SCALE_HEADER}
{scale_rows(phases["light"])}

Throughput ratio 2/1: **{s["ratio_answers_per_s"]}x** answers/s, {s["ratio_tokens_per_s"]}x \
tokens/s; by round pair {s["ratio_by_round"]}. Saturating rounds:

{by_round}

Redis commands per answer, the most frequent (from `INFO commandstats` over each \
deployment's rounds; only one deployment runs at a time):

{commands}

Idle chatd, connections open (cores busy over {IDLE_S:g} s): {s["idle_chatd_cores_busy"]}. \
Warning and error log lines by event: {s["chatd_log_warnings"]}.

Where the machine's CPU went (cores busy, out of {machine["nproc"]}; *rig* is the simulator, \
this load generator and Redis; *unattributed* is the machine's busy time not in any of our \
processes: other people's work, kernel threads; within ±0.03 it is accounting noise):

| load | processes | machine | chatd | simulator | load generator | Redis \
| rig share of busy CPU | unattributed | stolen |
|---|---|---|---|---|---|---|---|---|---|
{machine_rows}

## 2. Thread-offload cost per Redis call

In this process, against the same redis-server (idle, loopback). *Plain loop*: redis-py's \
synchronous client called in a loop on the main thread, no threads. *RedisClient.call*: \
chatd's path, `trio.to_thread.run_sync` under a CapacityLimiter of {o["threads"]} with a \
BlockingConnectionPool as large, through the redis breaker; *concurrency* is how many trio \
tasks call at once. GET reads a 100-byte value. Each row: {p["offload_calls"]} calls, \
{p["offload_repeats"]} time(s), the rows in turn, after a warm-up. *µs/call* is wall time over \
calls (1 / throughput) and *CPU µs/call* this process's CPU (all threads; Redis's own \
excluded) over calls, each the median of the repetitions; latency is each call's own, over \
all of them; *overhead* is the offloaded row minus the plain loop for the same command. Over \
these rows the machine was {o["machine_cores_busy"]} cores busy: this process \
{o["this_process_cores_busy"]}, Redis {o["redis_cores_busy"]}, everything else \
{o["other_cores_busy"]} (other people's work, kernel), which competes with these loops for the \
cores.

| call | concurrency | calls | µs/call | µs/command | calls/s | latency p50 / p95 µs \
| CPU µs/call | offload overhead µs/call | CPU overhead µs/call |
|---|---|---|---|---|---|---|---|---|---|
{offload_rows}

A GET costs {sync_get["us_per_call"]} µs in a plain loop and {offload_get["us_per_call"]} µs \
through a thread; {n} GETs pipelined in one call cost {piped["us_per_call"]} µs, \
{piped["us_per_command"]} µs per command: \
{round(offload_get["us_per_call"] * n / piped["us_per_call"], 1)}x cheaper than {n} separate \
calls.

µs/call by repetition (CPU µs/call):

{by_repeat}

## Machine

{machine_markdown(machine)}
"""
