"""The Markdown a person reads for one run of the load generator (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machine import machine_markdown

__all__ = ["counts", "latencies", "markdown", "rss_mib"]

OVERHEAD_NOTE = (
    "*Overhead* is client TTFT (`chat` sent → first `token`) minus the simulator's floor "
    "for that request: its ttft for a direct answer and for Path B (the router's first chunk "
    "names the tool, and chatd asks the FAQ with the question as asked); for Path A, ttft + "
    "(units − 1) / tokens_per_s (the router's tool-call chunks: a head, then the arguments in "
    "8-character pieces) + the second call's ttft. It counts answers from the LLM on the "
    "expected path only, and holds chatd's work and queueing plus the client's and the "
    "simulator's scheduling on this shared machine. *chatd TTFT* is `done.timings.ttft_ms`. "
    "*tokens* are the LLM's (`usage.completion_tokens`): a Path B answer streams from the FAQ "
    "tool and has none. *CPU s/1k tok* is chatd's utime+stime over the run per 1,000 of them "
    "(– when there are none), *CPU ms/req* the same per request sent; "
    "*calls/answered* is the simulator's request count over the run per request answered "
    "(`done`, not cancelled)."
)
HEADER = (
    "| scenario | users | requests | answered | errors by code "
    "| client TTFT p50/p95/p99 ms | chatd TTFT p50 ms | overhead p50/p95/p99 ms "
    "| tokens/s | frames/s | CPU s/1k tok | CPU ms/req | chatd busy "
    "| RSS MiB start/peak/end | calls/answered | shared/cached | wrong path |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
KIND_HEADER = (
    "| kind | requests | answered | client TTFT p50/p95/p99 ms | overhead p50/p95/p99 ms "
    "| sim floor ms |\n|---|---|---|---|---|---|"
)


def latencies(s: Mapping[str, Any]) -> str:
    """p50 / p95 / p99 of a ``pipeline_stats.latency_ms``, or – if it has no samples."""
    return f"{s['p50_ms']:g} / {s['p95_ms']:g} / {s['p99_ms']:g}" if s.get("n") else "–"


def counts(c: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def rss_mib(rss: Mapping[str, int]) -> str:
    """RSS start / peak / end (KiB) in whole MiB."""
    return " / ".join(f"{rss[k] / 1024:.0f}" for k in ("start", "peak", "end"))


def _row(r: Mapping[str, Any], users: int) -> str:
    per_1k = r["chatd_cpu_s_per_1k_tokens"]
    return (
        f"| {r['scenario']} | {users} | {r['requests']} | {r['answered']} "
        f"| {counts(r['errors_by_code'])} | {latencies(r['client_ttft'])} "
        f"| {r['server_ttft'].get('p50_ms', '–')} | **{latencies(r['overhead'])}** "
        f"| {r['tokens_per_s']:g} | {r['frames_per_s']:g} "
        f"| {'–' if per_1k is None else f'{per_1k:g}'} | {r['chatd_cpu_ms_per_request']:g} "
        f"| {r['chatd_cpu_busy']:.0%} | {rss_mib(r['chatd_rss_kib'])} "
        f"| {r['upstream_calls_per_answered']:g} | {r['shared']} / {r['cached']} "
        f"| {r['wrong_path']} |"
    )


def _details(r: Mapping[str, Any]) -> str:
    lines = [f"### {r['scenario']}: {r['description']}", ""]
    if r["chatd_env"]:
        lines.append(f"chatd settings: {counts(r['chatd_env'])}.")
    if r.get("duration_s") is not None:
        lines.append(f"Sending for {r['duration_s']:g} s.")
    lines.append(
        f"Terminals: {counts(r['terminals'])}. Actions: {counts(r['actions'])}. "
        f"Upstream calls {r['upstream_calls']}; simulator saw "
        f"{r['sim_client_disconnects']} client disconnects. CPU s: chatd "
        f"{r['chatd_cpu_s']}, simulator {r['sim_cpu_s']}, load generator "
        f"{r['client_cpu_s']}; cores busy: the rig's {r.get('rig_cores_busy', '?')}, "
        f"the whole machine's {r['machine_cores_busy']} (the rest is other work on it)."
    )
    if len(r["by_kind"]) > 1:
        lines += ["", KIND_HEADER]
        lines += [
            f"| {k} | {v['requests']} | {v['answered']} | {latencies(v['client_ttft'])} "
            f"| {latencies(v['overhead'])} | {v['sim_floor_ms']:g} |"
            for k, v in r["by_kind"].items()
        ]
    if "phases" in (outage := r.get("outage") or {}):
        phases = "; ".join(f"{p}: {counts(c)}" for p, c in outage["phases"].items())
        lines += [
            "",
            f"Fault on at {outage['fault_on_s']} s, off at {outage['fault_off_s']} s. By "
            f"when sent: {phases}. First answer (the half-open probe) sent "
            f"{outage['recovery_s']} s after the fault ended, done {outage['probe_s']} s "
            f"later; refused while it ran: {outage['refused_while_probing']}; failures "
            f"sent after it ended: {outage['failed_after_recovery']} "
            f"(recovered: **{outage['recovered']}**).",
        ]
    return "\n".join(lines)


def markdown(result: Mapping[str, Any]) -> str:
    """The results file: one row per scenario, then each scenario's details and the machine."""
    p, scenarios = result["plan"], result["scenarios"]
    rows = "\n".join(_row(r, p["users"]) for r in scenarios)
    details = "\n\n".join(_details(r) for r in scenarios)
    return (
        f"# Load: {', '.join(r['scenario'] for r in scenarios)}\n\n"
        f"`{result['command']}` ({result['elapsed_s']} s). Each scenario: a fresh simulator "
        f"(ttft {p['ttft_ms']:g} ms, {p['tokens_per_s']:g} tokens/s) and chatd, each in its "
        f"own process; {p['users']} virtual users, one WebSocket each, ramped up over "
        f"{p['ramp_s']:g} s, thinking 0–{2 * p['think_s']:g} s between chats, for "
        f"{p['duration_s']:g} s"
        + (f" or {p['max_requests']} requests" if p["max_requests"] else "")
        + ". Every question is unique (no cache or flight answers it) except in *storm*.\n\n"
        f"{HEADER}\n{rows}\n\n{OVERHEAD_NOTE}\n\n{details}\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )
