"""The report of ``bench_pipeline.py``: its results as Markdown (pure).

Also :func:`rows`, the table rows from a template, which the observability report shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loadgen import profiling
from loadgen.script import report_opening
from machine import machine_markdown

from chatd.llm.sim.completions import ARGUMENT_PIECE_CHARS

__all__ = ["markdown", "rows"]


def rows(template: str, items: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table's rows: ``template`` formatted with each item's fields."""
    return "\n".join(template.format(**item) for item in items)


PATH_ROW = (
    "| {kind} | {message} | {client[n]} | **{client[p50_ms]}** | {client[p95_ms]} "
    "| {client[min_ms]}–{client[max_ms]} | {server_p50_ms} | {sim_floor_ms} |"
)
LOAD_ROW = (
    "| {label} | {token_merge_ms:g} | {connections} | {chats} ({errors} errors, {reused} cached "
    "or shared) | {sim_tokens} | {token_frames} | {sim_tokens_per_token_frame} "
    "| {achieved_tokens_per_s} / {demanded_tokens_per_s} | {chatd_cpu_busy:.0%} "
    "| **{chatd_us_per_sim_token}** | {chatd_us_per_token_frame} | {chatd_us_per_frame} "
    "| {chatd_ms_per_chat} | {sim_cpu_busy:.0%} | {client_cpu_busy:.0%} |"
)
LATENCY_ROW = (
    "| {label} | {chat_duration_p50_ms} | {chat_duration_p95_ms} | {chat_duration_ideal_ms} "
    "| {server_ttft_p50_ms} | {machine_cores_busy} | {machine_cores_stolen} |"
)


PROFILE_TABLES = (  # title, first column, key
    ("Self time by library (or chatd subpackage)", "area", "self_by_area_pct"),
    ("Self time by function", "function (file)", "self_by_function_pct"),
    ("Inclusive time by function", "function (file)", "inclusive_by_function_pct"),
)


def _profile_markdown(profile: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    tables = "\n\n".join(
        f"{title}:\n\n| {header} | share |\n|---|---|"
        + "".join(f"\n| {name} | {pct}% |" for name, pct in profile[key])
        for title, header, key in PROFILE_TABLES
    )
    return (
        "\n## Where chatd's CPU goes (py-spy)\n\n"
        f"{profile['samples']} samples at 250 Hz over {p['profile_rounds']} extra load round(s) of "
        f"the default configuration ({p['load_connections']} chats, "
        f"token_merge_ms={p['default_merge_ms']:g}), not counted above; "
        f"{profile['idle_worker_thread_samples_left_out']} samples of idle trio worker threads "
        f"left out. Raw collapsed stacks: `{profile['raw_file']}`. Shares are of the samples "
        f"where chatd was running Python (py-spy leaves out idle time).\n\n{tables}\n"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, ttft, load = result["params"], result["ttft"], result["load"]
    configs = load["configs"]
    paths = rows(PATH_ROW, ({"kind": kind, **v} for kind, v in ttft["paths"].items()))
    ratios = "\n".join(
        f"| tool_stream / {kind} | **{r['ratio_of_medians']}** | {r['ratio_of_p95']} "
        f"| {r['sim_floor_ratio']} |"
        for kind, r in ttft["ratios_b_over_a"].items()
    )
    load_rows = rows(LOAD_ROW, ({**c, "reused": c["cached"] + c["shared"]} for c in configs))
    by_round = "\n".join(f"- {c['label']}: {c['chatd_us_per_sim_token_by_round']}" for c in configs)
    small = (
        f" A third chatd (default merge) serves only {p['small_connections']} connections, each "
        f"asking {p['load_connections'] // max(1, p['small_connections'])} times as many questions "
        f"per round: as many chats in all, at {p['small_connections']}/{p['load_connections']} of "
        "the concurrency."
        if p["small_connections"]
        else ""
    )
    profile = profiling.profile_section(
        load.get("profile"), "## Profile", lambda f: _profile_markdown(f, p)
    )
    return (
        report_opening("Pipeline: time to first token by path, server CPU per token", result)
        + " chatd and the simulated LLM each run in their own process, this client over "
        "trio-websocket on loopback. Every question is asked once only (a unique prefix or tag), "
        "so no answer comes from chatd's answer cache or a shared flight; the run checks `cached` "
        "and `shared` are false. The machine is shared and noisy: compare ratios from one run, not "
        "absolute times across runs.\n\n## Verdicts\n\n"
        + "".join(f"- {line}\n" for line in result["verdicts"])
        + "\n## 1. Time to first token by path\n\n"
        f"Simulator ttft {p['ttft_ms']:g} ms, {p['ttft_tokens_per_s']:g} tokens/s. "
        f"{p['ttft_rounds']} rounds (after one warm-up), each sending the three requests side by "
        "side on three connections; TTFT is client-measured from sending `chat` to the first "
        "`token`, and each request is then cancelled. *Sim floor* is the simulator's own earliest "
        "possible first token for the path: the router call's last tool-call chunk is due at ttft "
        f"+ (units-1)/rate (a head, then the arguments in {ARGUMENT_PIECE_CHARS}-character "
        "pieces), and Path A adds the second call's ttft. Path B cannot be under ttft + the "
        "arguments' streaming time and Path A cannot be under twice ttft + that, so with these "
        "settings B/A > 0.5 whatever chatd does after the router call.\n\n"
        "| path | message | n | p50 ms | p95 ms | min–max ms | server ttft p50 ms | sim floor ms "
        f"|\n|---|---|---|---|---|---|---|---|\n{paths}\n\n"
        f"| ratio | of medians | of p95 | sim floor |\n|---|---|---|---|\n{ratios}\n\n"
        "## 2. Server CPU per streamed token\n\n"
        f"Simulator ttft {p['load_ttft_ms']:g} ms, {p['load_tokens_per_s']:g} tokens/s. "
        f"{p['load_connections']} WebSocket connections per chatd, each asking "
        f"{p['load_chats_per_connection']} chit-chat question(s) (direct path, 33–55 tokens each) "
        f"one after another per round; {p['load_rounds']} measured rounds per configuration, taken "
        f"in turn (order reversed every other round) after one warm-up round.{small} chatd CPU is "
        "utime+stime from /proc over the rounds only (connections were opened before). *Tokens* "
        "are the simulator's (`usage.completion_tokens`); *frames* are all WebSocket frames chatd "
        "sent (accepted, route, token, done). When chatd's CPU is near 100% busy it is the "
        "bottleneck: achieved tokens/s falls below demanded, and the writer merges more tokens "
        "per frame because the client looks slow.\n\n"
        "| config | token_merge_ms | connections | chats | sim tokens | token frames "
        "| tokens/frame | tokens/s achieved / demanded | chatd CPU busy | chatd µs/token "
        "| µs/token frame | µs/frame (all) | chatd ms/chat | sim CPU busy | client CPU busy |\n"
        f"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{load_rows}\n\n"
        "Latency under that load, and the whole machine's CPU (all processes, ours and anyone "
        f"else's, out of {result['machine']['nproc']} cores): *ideal* is the simulator alone, "
        "ttft plus one token interval per further token of the mean answer.\n\n"
        "| config | chat p50 ms | chat p95 ms | ideal ms | server ttft p50 ms "
        "| machine cores busy | cores stolen |\n|---|---|---|---|---|---|---|\n"
        f"{rows(LATENCY_ROW, configs)}\n\nchatd µs/token by round:\n\n{by_round}\n\n"
        "Idle chatd CPU with the connections open (s per s): "
        f"{load['idle_chatd_cpu_s_per_s']}\n{profile}\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )
