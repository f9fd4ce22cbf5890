"""The Markdown of a ``targets.py`` run: the verdicts, then each section's numbers (pure).

Each section is declared as data (:data:`SECTIONS`): a title, a paragraph and tables, whose
templates are filled in from the section's figures by :class:`_Fill`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from machine import machine_markdown

from loadgen.report import counts, latencies, rss_mib
from loadgen.script import provenance_markdown

__all__ = ["markdown"]

Section = Mapping[str, Any]


def _n(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


FORMATS: dict[str, Callable[[Any], str]] = {
    "num": _n,
    "lat": latencies,
    "counts": counts,
    "rss": rss_mib,
    "mib": lambda kib: _n(kib / 1024),
    "list": lambda values: ", ".join(map(str, values)),
}


@attrs.frozen
class _Fill(string.Formatter):
    """``str.format`` over a section's figures: the specs of :data:`FORMATS` write this
    report's cells (``{overhead:lat}``), a bare ``{field}`` is ``bare(value)`` (``!s`` first
    for plain text), and a missing field is None."""

    bare: Callable[[Any], str]

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get(str(key))

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec in FORMATS:
            return FORMATS[format_spec](value)
        return format(value, format_spec) if format_spec else self.bare(value)


PROSE, CELLS = _Fill(str), _Fill(_n)


@attrs.frozen
class Table:
    """Columns ``a | b | …``, and the ``row`` template filled in for each of ``rows(section)``
    (a bare field is a number as :func:`_n` writes it)."""

    header: str
    row: str
    rows: Callable[[Section], Iterable[Mapping[str, Any]]] = lambda s: [s]

    def markdown(self, section: Section) -> str:
        lines = [f"| {self.header} |", "|" + "---|" * (self.header.count(" | ") + 1)]
        lines += [f"| {CELLS.vformat(self.row, (), r)} |" for r in self.rows(section)]
        return "\n".join(lines)


def _each(rows: Mapping[str, Mapping[str, Any]], key: str, **more: Any) -> list[dict[str, Any]]:
    """The rows of a mapping, each with its key as the field ``key`` (and ``more``)."""
    return [{**row, key: name, **more} for name, row in rows.items()]


def _servers(floor: Section) -> list[dict[str, Any]]:
    """The floor's servers, each with its capacity and the tokens/s demanded."""
    rows = _each(floor["servers"], "server", demanded=floor["demanded_tokens_per_s"])
    return [{**row, "capacity": floor[f"{row['server']}_capacity"]} for row in rows]


SECTIONS: dict[str, tuple[str, str, *tuple[Table, ...]]] = {
    "streams": (
        "Concurrent streams",
        "{users} virtual users, one WebSocket each, ramped up over the first seconds, each asking "
        "chit-chat questions back to back (simulator ttft {ttft_ms:g} ms, {tokens_per_s_each:g} "
        "tokens/s), sending for {duration_s:g} s; the run ends when the last answer is in. "
        "*Overhead* is client TTFT minus the simulator's ttft (see load.py's report). *Errors* "
        "are as the users saw them: error events, connections refused or not accepted within "
        "10 s (`connect:`), requests lost with their connection; `lost:trio-websocket` (a client "
        "library bug on our own close, no request lost) is listed but not counted against the "
        "target.",
        Table(
            "requests | answered | errors (client view) | client TTFT p50/p95/p99 ms "
            "| overhead p50/p95/p99 ms | chatd CPU busy | tokens/s | RSS MiB start/peak/end",
            "{requests} | {answered} | {client_errors:counts} | {client_ttft:lat} "
            "| {overhead:lat} | {chatd_cpu_busy:.0%} | {tokens_per_s} | {chatd_rss_kib:rss}",
        ),
    ),
    "floor": (
        "The floor: chatd against the bare relay; capacity",
        "{users} users asking chit-chat back to back against a simulator at {ttft_ms:g} ms and "
        "{tokens_per_s_each:g} tokens/s, {rounds} round(s) of {duration_s:g} s per server, "
        "alternating. CPU is the server process's utime+stime over the users' run; *tokens* the "
        "simulator's. The relay (`benchmarks/relay.py`) sends the tokens of each upstream read "
        "as one frame; chatd merges tokens within `server.token_merge_ms`. **chatd / relay = "
        "{chatd_over_relay}x.** Achieved tokens/s counts the whole run, ramp and tail included.",
        Table(
            "server | requests | errors | tokens | tokens/frame | CPU busy | µs/token "
            "| µs/token by run | tokens/s per core | 40 tok/s streams per core "
            "| tokens/s achieved / demanded",
            "{server} | {requests} | {errors_by_code:counts} | {tokens} "
            "| {tokens_per_token_frame} | {cpu_busy} | {us_per_token} "
            "| {us_per_token_by_run:list} | {capacity[tokens_per_s_per_core]} "
            "| {capacity[streams_per_core]} | {achieved_tokens_per_s:g} / {demanded!s}",
            _servers,
        ),
    ),
    # measure_storm lives in loadgen/resilience_storm.py; the paragraph says
    # `bench_resilience.measure_storm` (bench_resilience.py imports it, and comparisons.py
    # takes it from there) as the committed targets.md does.
    "storm": (
        "Identical questions: flights and cache on against off",
        "{n} identical chats sent at once over {connections} connections, then the same again "
        "once all ended (`bench_resilience.measure_storm`); *on* is the defaults, *off* has "
        "flights and the answer cache off; limits raised in both so nothing is refused.",
        Table(
            "flights+cache | wave | chats | upstream calls | done | shared / cached | errors "
            "| client TTFT p50/p95/p99 ms | chatd CPU s",
            "{label} | {wave} | {chats} | {upstream_calls} | {done} | {shared!s} / {cached!s} "
            "| {errors:counts} | {client_ttft:lat} | {chatd_cpu_s}",
            lambda s: [
                {**w, "label": label, "wave": number}
                for label, c in s["configs"].items()
                for number, w in enumerate(c["waves"], 1)
            ],
        ),
    ),
    "paths": (
        "Path B against Path A: time to first token",
        "{rounds} rounds of one request per path side by side, each cancelled at its first token "
        "(`bench_pipeline.measure_ttft`; simulator {ttft_ms:g} ms, {tokens_per_s:g} tokens/s).",
        Table(
            "path | n | client p50 ms | client p95 ms | chatd p50 ms | sim floor ms",
            "{kind} | {client[n]} | {client[p50_ms]} | {client[p95_ms]} | {server_p50_ms} "
            "| {sim_floor_ms}",
            lambda s: _each(s["paths"], "kind"),
        ),
        Table(
            "ratio | of medians | of p95 | sim floor",
            "tool_stream / {kind} | {ratio_of_medians} | {ratio_of_p95} | {sim_floor_ratio}",
            lambda s: _each(s["ratios_b_over_a"], "kind"),
        ),
    ),
    "cancels": (
        "Cancel to upstream close",
        "{users} users asking chit-chat (simulator 300 ms, 40 tokens/s), every request cancelled "
        "0.05–1 s after it was sent. From just before the `cancel` frame is sent to "
        "`closewatch.py` (a TCP proxy between chatd and the simulator) seeing chatd close that "
        "request's upstream connection; both stamp CLOCK_MONOTONIC.",
        Table(
            "cancels | closes matched | no close seen | closed before | p50 / p95 / p99 ms "
            "| max ms",
            "{cancels} | {closes_matched} | {no_close_seen} | {closed_before} "
            "| {latency:lat} | {max_ms}",
            lambda s: [{**s["cancel_to_close"], "latency": s["cancel_to_close"]}],
        ),
    ),
    "idle": (
        "Idle connections",
        "WebSockets opened and left idle (no frame sent) after a warm-up; RSS is VmRSS. *Server "
        "saw* is chatd's `chatd_active_connections` gauge. *Answered after*: a question on a "
        "fresh connection once they closed.",
        Table(
            "server | connections | server saw | RSS before MiB | RSS open MiB "
            "| KiB each (delta) | KiB each (slope) | answered after",
            "{server} | {connections} | {server_saw_connections} | {rss_before_kib:mib} "
            "| {rss_open_kib:mib} | {delta_kib_per_connection} | {slope_kib_per_connection} "
            "| {answered_after}",
            lambda s: _each(s, "server"),
        ),
    ),
    "logging": (
        "Request logs on against off",
        "`bench_observability.run_end_to_end`: {connections} connections × "
        "{chats_per_connection} questions per round over the three paths, {rounds} rounds per "
        "configuration taking turns (simulator {sim[ttft_ms]:g} ms, {sim[tokens_per_s]:g} "
        "tokens/s). *logs-off* is level error. CPU on/off: **{cpu_on_over_off}x** "
        "({cpu_on_minus_off_us:+g} µs per request). Two chatd processes differ by a few percent "
        "even when configured alike (see observability.md's A/A control).",
        Table(
            "config | requests | chatd CPU µs/request | by round | log lines/request "
            "| request p50 ms | request p95 ms",
            "{label} | {requests} | {chatd_cpu_us_per_request} "
            "| {chatd_cpu_us_per_request_by_round:list} | {log_lines_per_request} "
            "| {request_p50_ms} | {request_p95_ms}",
            lambda s: _each(s["configs"], "label"),
        ),
    ),
    "soak": (
        "Soak",
        "{users} users, scenario *{scenario}* back to back, simulator {ttft_ms:g} ms and "
        "{tokens_per_s:g} tokens/s; RSS read after each checkpoint once every connection closed. "
        "Growth **{growth:.1%}**; {requests:,} requests, {answered:,} answered, errors: "
        "{errors_by_code:counts}, {cached:,} answered from the cache; {wall_s:g} s. The answer "
        "cache is bounded (`cache.max_entries`, 10,000 by default) and fills with unique "
        "questions: growth up to its bound is by design. Put all the growth down to the entries "
        "the cache gained and each cost {kib_per_cache_entry_gained:num} KiB (an upper bound).",
        Table(
            "requests | RSS MiB | cache entries | chatd CPU s so far",
            "{requests} | {rss_kib:mib} | {cache_entries} | {chatd_cpu_s}",
            lambda s: s["checkpoints"],
        ),
    ),
}
TARGETS = Table(
    "target | goal | measured | verdict | measured under",
    "{target} | {goal} | {measured} | **{verdict}** | {conditions}",
    lambda result: result["targets"],
)


def markdown(result: Mapping[str, Any]) -> str:
    """The results file: the targets table, each section, the plots, the machine."""
    scaled = (
        " **Quick run: every section is scaled down** (see *measured under*); its verdicts "
        "speak of that load, not of the issue's. `--full` runs the issue's numbers."
        if result["mode"] == "quick"
        else ""
    )
    parts = [
        "# Targets of issue 6: will it hold?\n",
        f"`{result['command']}` ({result['elapsed_s']} s; by section: "
        f"{counts(result['section_seconds'])}); {provenance_markdown(result['chatd'])}. Each "
        "section starts its own simulator and server processes; the load generator, the "
        "simulator and the server share this machine's cores with whatever else runs on it, so "
        f"compare ratios within the run, not absolute times across runs.{scaled}\n",
        TARGETS.markdown(result),
    ]
    for key, (title, text, *tables) in SECTIONS.items():
        if (s := result["sections"].get(key)) is None:
            continue
        if "failed" in s:
            body = f"Failed: {s['failed']}"
        else:
            body = "\n\n".join([PROSE.vformat(text, (), s), *(t.markdown(s) for t in tables)])
        parts.append(f"## {title}\n\n{body}")
    plots = "\n".join(
        f"- ![{p}]({p})" if p.endswith(".png") else f"- {p}" for p in result.get("plots", [])
    )
    parts.append(f"## Plots\n\n{plots}")
    parts.append(f"## Machine\n\n{machine_markdown(result['machine'])}")
    return "\n\n".join(parts) + "\n"
