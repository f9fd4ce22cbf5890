"""The report of ``bench_abuse.py``: its results as Markdown (pure), the slow-reader floods'
figures and samples, and key B's phases beside what key A's flood did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadgen.abuse_slow_readers import mb
from loadgen.script import report_opening
from machine import machine_markdown

__all__ = ["markdown", "per_token_reading", "round_robin_reading"]


def _slow_rows(samples: Sequence[Mapping[str, Any]], rss0: int) -> str:
    return "\n".join(
        f"| {s['t_s']:g} | {mb(s['rss_kib'])} | {mb(s['rss_kib'] - rss0)} "
        f"| {s['sim']['requests']} | {s['sim']['active']} | {s['sim']['completed']} "
        f"| {s['sim']['client_disconnects']} "
        f"| {_held_mb(s, 'upstream')} | {_held_mb(s, 'downstream')} "
        f"| {s['requests_in_flight']} | {s['connections']} | {s['reaps']} |"
        for s in samples
    )


def _phase_rows(phases: Mapping[str, Mapping[str, Any]]) -> str:
    def pair(summary: Mapping[str, Any]) -> str:
        return f"{summary['p50_ms']} / {summary['p90_ms']}"

    return "\n".join(
        f"| {p['name']} | {p['done']} / {p['chats']} | **{pair(p['client_overhead'])}** "
        f"| {p['client_overhead']['min_ms']}–{p['client_overhead']['max_ms']} "
        f"| {pair(p['server_overhead'])} | {pair(p['queue'])} "
        f"| {p['llm_streams_in_use']['median']} | {p['queued']['median']} "
        f"| {p['cores_busy'].get('chatd')} / {p['cores_busy'].get('sim')} / "
        f"{p['cores_busy'].get('machine')} | {p['errors'] or ''} |"
        for p in phases.values()
    )


def _held_mb(sample: Mapping[str, Any], side: str) -> float:
    """Bytes the kernel holds on one hop, as MB: the sender's unsent plus the reader's unread."""
    queues = sample[side]
    return mb((queues["server_unsent"] + queues["client_unread"]) / 1024)


def per_token_reading(slow: Mapping[str, Any], answer_tokens: int) -> str:
    """The window's RSS growth per upstream token read to the end, against the text's
    own size per token: how much chatd keeps per token it holds."""
    window = slow["window"]
    completed = window["sim"]["completed"]
    if not completed:
        return "No upstream answer was read to the end within the window."
    growth_b = (window["peak_rss_kib"] - slow["rss_baseline_kib"]) * 1024
    tokens = completed * answer_tokens
    text_b = slow["answer_chars"] / answer_tokens
    return (
        f"{completed} answers read to the end are {tokens:,} tokens: the growth is "
        f"~{growth_b / tokens:.0f} bytes per token read, for {text_b:.1f} bytes of text per "
        f"token (~{growth_b / completed / 1e6:.2f} MB per {answer_tokens:,}-token answer)."
    )


def _slow_section(slow: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    window, after = slow["window"], slow["after_close"]
    rss0 = slow["rss_baseline_kib"]
    return (
        f"- RSS: baseline {mb(rss0)} MB; peak within the window {mb(window['peak_rss_kib'])} MB "
        f"(**+{mb(window['peak_rss_kib'] - rss0)} MB**); at {window['t_s']:g} s "
        f"{mb(window['rss_kib'])} MB; peak over the whole watch {mb(slow['peak_rss_kib'])} MB "
        f"(VmHWM, the process's lifetime high: {mb(slow['peak_rss_hwm_kib'])} MB).\n"
        f"- Upstream at {window['t_s']:g} s: {window['sim']['requests']} requests, "
        f"**{window['sim']['completed']} completed**, {window['sim']['active']} open, "
        f"{window['sim']['client_disconnects']} cut by chatd; {_held_mb(window, 'upstream')} MB "
        f"held in the kernel buffers of the {window['upstream']['connections']} upstream "
        f"sockets, {_held_mb(window, 'downstream')} MB in the slow readers' sockets. "
        f"{per_token_reading(slow, p['answer_tokens'])}\n"
        f"- CPU over the {slow['watched_s']:g} s watched: chatd {slow['chatd_cores_busy']} "
        f"cores, simulator {slow['sim_cores_busy']}.\n"
        f"- After the sockets closed: upstream settled in {after['settled_s']} s "
        f"({after['sim']['completed']} completed, {after['sim']['client_disconnects']} cut, "
        f"{after['sim']['active']} open in all); chatd requests in flight "
        f"{after['requests_in_flight']}; RSS {mb(after['rss_kib'])} MB, "
        f"{mb(after['rss_kib_2s_later'])} MB 2 s later. chatd's requests by outcome: "
        f"{slow['requests_by_outcome']}. A chat after it all: "
        f"`{slow['check_after']['terminal']}`, TTFT {slow['check_after']['ttft_ms']} ms.\n"
        f"- chatd's warning/error log lines by event: {slow['chatd_log_warnings'] or 'none'}.\n\n"
        "| t s | RSS MB | growth MB | sim requests | open | completed | cut "
        "| upstream held MB | downstream held MB | chatd requests | connections | reaps |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{_slow_rows(slow['samples'], rss0)}\n\n"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, slow, fair = result["params"], result["slow_readers"], result["fairness"]
    variant = result.get("slow_readers_variant")
    flood = fair["flood"]
    verdicts = "\n".join(f"- {line}" for line in result["verdicts"])
    loaded = fair["phases"]["loaded"]
    variant_md = ""
    if variant is not None:
        variant_md = (
            f"### The same with `{variant['word']}` for a token\n\n"
            f"A second flood, the same but for the word: {variant['answer_chars']:,} characters "
            "an answer, more than the 64 Ki characters a request may have waiting for a "
            "lagging client before it waits itself (`_PENDING_CHARS` in "
            "`chatd/server/connection.py`), less than `limits.max_answer_chars`. Watched for "
            f"the window only ({p['window_s']:g} s).\n\n{_slow_section(variant, p)}"
        )
    title = "Abuse: slow readers flooding long answers; one key flooding another"
    return (
        report_opening(title, result) + " Everything runs on this one machine "
        f"({result['machine']['nproc']} cores, shared with other people's work: load average "
        f"{result['machine']['loadavg_at_start']} at the start, {result['loadavg_at_end']} at "
        "the end): chatd, the simulated LLM and the clients share its cores.\n\n"
        f"## Verdicts\n\n{verdicts}\n\n"
        "## 1. Slow-reader flood\n\n"
        "`chatd serve` with its default settings (one process) in front of `chatd sim-llm` "
        "(its own process) with a rules file answering every chat with "
        f"{p['answer_tokens']:,} tokens (`{p['word']} {p['word']} ...`, "
        f"{slow['answer_chars']:,} characters, under `limits.max_answer_chars`; ~200 bytes of "
        f"SSE a token upstream) at {p['long_tokens_per_s']:g} tokens/s after "
        f"{p['long_ttft_ms']:g} ms. After a warm-up chat and `POST /_sim/reset`, "
        f"{p['slow_sockets']} raw sockets do the WebSocket handshake, send "
        f"{p['chats_per_socket']} unique chats each ({slow['chats']} in all; no flight or "
        "cache can share them) and never read again. Every second: chatd's VmRSS, the "
        "simulator's `/_sim/stats`, chatd's `/metrics`, and the bytes the kernel holds in "
        "established sockets (`/proc/net/tcp`): *upstream held* is the simulator's unsent "
        "plus chatd's unread bytes on its LLM connections, *downstream held* chatd's unsent "
        "plus the slow readers' unread bytes. Growth is against the median of 5 samples "
        f"before the flood. The figure is the first {p['window_s']:g} s; the sockets then "
        f"stay open and unread for {p['tail_s']:g} s more, to see what the janitor "
        "(`janitor.stalled_client_s` = 30 s) and the LLM gap timeout "
        "(`llm.timeouts.gap_s` = 30 s) do, and are then closed.\n\n"
        f"{_slow_section(slow, p)}{variant_md}"
        "## 2. Fairness under a flood from one key\n\n"
        "`chatd serve` with `server.api_keys` = two keys (and an operator key for "
        f"`/metrics`), `limits.llm_streams` = {p['llm_streams']}, `limits.max_queue` = "
        f"{p['max_queue']}, otherwise defaults, in front of `chatd sim-llm` with the built-in "
        f"rules at {p['fair_ttft_ms']:g} ms to the first token and {p['fair_tokens_per_s']:g} "
        "tokens/s (the simulator's defaults). Every chat is unique chit-chat, answered "
        "directly (33–55 tokens), never cached or shared. Key A, from a child process, keeps "
        f"{p['flood_chats']} chats in flight on each of {p['flood_sockets']} connections "
        f"({p['flood_sockets'] * p['flood_chats']} in all, against {p['llm_streams']} slots "
        f"and {p['max_queue']} places in the queue), reads every frame, and re-sends a "
        f"refused chat {p['refusal_pause_s'] * 1000:g} ms later (ignoring `retry_after_ms`). "
        f"Key B, on one connection of this process, asks {p['b_chats']} chats one after "
        f"another ({p['b_think_s'] * 1000:g} ms between them): without the flood, under it "
        "(once A held all it may, nine tenths of the slots, and someone queued, "
        f"{fair['ramp_s']} s after A connected, "
        "plus 1 s), and, in a full run, without it again. *Overhead* is TTFT minus the "
        f"simulator's {p['fair_ttft_ms']:g} ms: as B measures it (`chat` sent to first "
        "`token` frame) and as chatd reports it (`timings.ttft_ms`); *queue* is chatd's "
        "`timings.queue_ms`, the wait for a slot. Slots in use and queue depth are sampled "
        "from `/metrics` every 0.25 s during B's chats.\n\n"
        "| phase | B answered | overhead p50 / p90 ms (client) | min–max ms "
        "| overhead p50 / p90 ms (chatd) | queue p50 / p90 ms | llm_streams in use (median) "
        "| queued (median) | cores busy chatd / sim / machine | errors |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{_phase_rows(fair['phases'])}\n\n"
        f"Ratios loaded / unloaded (client overhead): median **{fair['ratio_p50']}x**, p90 "
        f"**{fair['ratio_p90']}x**. Key B's client TTFTs loaded (ms): "
        f"{[r['client_ttft_ms'] for r in loaded['records']]}; its queue waits (ms): "
        f"{[r['queue_ms'] for r in loaded['records']]}.\n\n"
        f"Key A's flood over {flood['elapsed_s']} s: {flood.get('sent', 0)} chats sent, "
        f"{flood.get('done', 0)} answered ({flood['done_per_s']} a second: a slot came free "
        f"every ~{round(1000 / max(flood['done_per_s'], 1e-9), 1)} ms on average), refused "
        f"or failed: {_flood_errors(flood) or 'none'}; the flooder used {flood['cpu_s']} s "
        f"of CPU. {round_robin_reading(fair)} chatd was idle again "
        f"{fair['idle_after_flood_s']} s after the flood "
        f"stopped. chatd's warning/error log lines by event: "
        f"{fair['chatd_log_warnings'] or 'none'}.\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def round_robin_reading(fair: Mapping[str, Any]) -> str:
    """What the slot turnover alone predicts for B's wait: arithmetic, not a measurement."""
    rate = fair["flood"]["done_per_s"]
    queued = fair["phases"]["loaded"]["queued"]["median"]
    if not rate or queued is None:
        return ""
    return (
        "For scale (arithmetic on these figures, not a measurement): round-robin puts B's "
        "chat behind at most one of A's, so it waits for one or two slots to come free, "
        f"~{round(2000 / rate)} ms for two at A's rate; a first-come queue {queued:g} deep "
        f"would have kept it ~{queued / rate:.1f} s."
    )


def _flood_errors(flood: Mapping[str, Any]) -> dict[str, int]:
    return {k.removeprefix("error:"): v for k, v in flood.items() if k.startswith("error:")}
