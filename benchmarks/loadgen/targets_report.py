"""The Markdown of a ``targets.py`` run: the verdicts, then each section's numbers (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from machine import machine_markdown

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


def _lat(s: Mapping[str, Any]) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['p50_ms']:g} / {s['p95_ms']:g} / {s['p99_ms']:g}"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_n(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _streams(s: Section) -> str:
    rss = s["chatd_rss_kib"]
    return (
        f"{s['users']} virtual users, one WebSocket each, ramped up over the first seconds, "
        f"each asking chit-chat questions back to back (simulator ttft {s['ttft_ms']:g} ms, "
        f"{s['tokens_per_s_each']:g} tokens/s), sending for {s['duration_s']:g} s; the run "
        "ends when the last answer is in. *Overhead* is client TTFT minus the simulator's "
        "ttft (see load.py's report). *Errors* are as the users saw them: error events, "
        "connections refused or not accepted within 10 s (`connect:`), requests lost with "
        "their connection; `lost:trio-websocket` (a client library bug on our own close, "
        "no request lost) is listed but not counted against the target.\n\n"
        + _table(
            [
                "requests",
                "answered",
                "errors (client view)",
                "client TTFT p50/p95/p99 ms",
                "overhead p50/p95/p99 ms",
                "chatd CPU busy",
                "tokens/s",
                "RSS MiB start/peak/end",
            ],
            [
                [
                    s["requests"],
                    s["answered"],
                    _counts(s["client_errors"]),
                    _lat(s["client_ttft"]),
                    _lat(s["overhead"]),
                    f"{s['chatd_cpu_busy']:.0%}",
                    s["tokens_per_s"],
                    " / ".join(f"{rss[k] / 1024:.0f}" for k in ("start", "peak", "end")),
                ]
            ],
        )
    )


def _floor(s: Section) -> str:
    rows = []
    for server, v in s["servers"].items():
        cap = s[f"{server}_capacity"]
        rows.append(
            [
                server,
                v["requests"],
                _counts(v["errors_by_code"]),
                v["tokens"],
                v["tokens_per_token_frame"],
                v["cpu_busy"],
                v["us_per_token"],
                ", ".join(map(str, v["us_per_token_by_run"])),
                cap["tokens_per_s_per_core"],
                cap["streams_per_core"],
                f"{v['achieved_tokens_per_s']:g} / {s['demanded_tokens_per_s']}",
            ]
        )
    return (
        f"{s['users']} users asking chit-chat back to back against a simulator at "
        f"{s['ttft_ms']:g} ms and {s['tokens_per_s_each']:g} tokens/s, {s['rounds']} round(s) "
        f"of {s['duration_s']:g} s per server, alternating. CPU is the server process's "
        "utime+stime over the users' run; *tokens* the simulator's. The relay "
        "(`benchmarks/relay.py`) sends the tokens of each upstream read as one frame; chatd "
        f"merges tokens within `server.token_merge_ms`. **chatd / relay = "
        f"{s['chatd_over_relay']}x.** Achieved tokens/s counts the whole run, ramp and "
        "tail included.\n\n"
        + _table(
            [
                "server",
                "requests",
                "errors",
                "tokens",
                "tokens/frame",
                "CPU busy",
                "µs/token",
                "µs/token by run",
                "tokens/s per core",
                "40 tok/s streams per core",
                "tokens/s achieved / demanded",
            ],
            rows,
        )
    )


def _storm(s: Section) -> str:
    rows = []
    for label, c in s["configs"].items():
        for number, w in enumerate(c["waves"], 1):
            rows.append(
                [
                    label,
                    number,
                    w["chats"],
                    w["upstream_calls"],
                    w["done"],
                    f"{w['shared']} / {w['cached']}",
                    _counts(w["errors"]),
                    _lat(w["client_ttft"]),
                    w["chatd_cpu_s"],
                ]
            )
    return (
        f"{s['n']} identical chats sent at once over {s['connections']} connections, then "
        "the same again once all ended (`bench_resilience.measure_storm`); *on* is the "
        "defaults, *off* has flights and the answer cache off; limits raised in both so "
        "nothing is refused.\n\n"
        + _table(
            [
                "flights+cache",
                "wave",
                "chats",
                "upstream calls",
                "done",
                "shared / cached",
                "errors",
                "client TTFT p50/p95/p99 ms",
                "chatd CPU s",
            ],
            rows,
        )
    )


def _paths(s: Section) -> str:
    rows = [
        [
            kind,
            v["client"]["n"],
            v["client"]["p50_ms"],
            v["client"]["p95_ms"],
            v["server_p50_ms"],
            v["sim_floor_ms"],
        ]
        for kind, v in s["paths"].items()
    ]
    ratios = [
        [f"tool_stream / {kind}", r["ratio_of_medians"], r["ratio_of_p95"], r["sim_floor_ratio"]]
        for kind, r in s["ratios_b_over_a"].items()
    ]
    return (
        f"{s['rounds']} rounds of one request per path side by side, each cancelled at its "
        f"first token (`bench_pipeline.measure_ttft`; simulator {s['ttft_ms']:g} ms, "
        f"{s['tokens_per_s']:g} tokens/s).\n\n"
        + _table(
            ["path", "n", "client p50 ms", "client p95 ms", "chatd p50 ms", "sim floor ms"], rows
        )
        + "\n\n"
        + _table(["ratio", "of medians", "of p95", "sim floor"], ratios)
    )


def _cancels(s: Section) -> str:
    c = s["cancel_to_close"]
    return (
        f"{s['users']} users asking chit-chat (simulator 300 ms, 40 tokens/s), every request "
        "cancelled 0.05–1 s after it was sent. From just before the `cancel` frame is sent to "
        "`closewatch.py` (a TCP proxy between chatd and the simulator) seeing chatd close "
        "that request's upstream connection; both stamp CLOCK_MONOTONIC.\n\n"
        + _table(
            [
                "cancels",
                "closes matched",
                "no close seen",
                "closed before",
                "p50 / p95 / p99 ms",
                "max ms",
            ],
            [
                [
                    c["cancels"],
                    c["closes_matched"],
                    c["no_close_seen"],
                    c["closed_before"],
                    _lat(c),
                    c.get("max_ms"),
                ]
            ],
        )
    )


def _idle(s: Section) -> str:
    rows = [
        [
            server,
            v["connections"],
            v["server_saw_connections"],
            v["rss_before_kib"] / 1024,
            v["rss_open_kib"] / 1024,
            v["delta_kib_per_connection"],
            v["slope_kib_per_connection"],
            v["answered_after"],
        ]
        for server, v in s.items()
    ]
    return (
        "WebSockets opened and left idle (no frame sent) after a warm-up; RSS is VmRSS. "
        "*Server saw* is chatd's `chatd_active_connections` gauge. *Answered after*: a "
        "question on a fresh connection once they closed.\n\n"
        + _table(
            [
                "server",
                "connections",
                "server saw",
                "RSS before MiB",
                "RSS open MiB",
                "KiB each (delta)",
                "KiB each (slope)",
                "answered after",
            ],
            rows,
        )
    )


def _logging(s: Section) -> str:
    rows = [
        [
            label,
            c["requests"],
            c["chatd_cpu_us_per_request"],
            ", ".join(map(str, c["chatd_cpu_us_per_request_by_round"])),
            c["log_lines_per_request"],
            c["request_p50_ms"],
            c["request_p95_ms"],
        ]
        for label, c in s["configs"].items()
    ]
    return (
        f"`bench_observability.run_end_to_end`: {s['connections']} connections × "
        f"{s['chats_per_connection']} questions per round over the three paths, "
        f"{s['rounds']} rounds per configuration taking turns (simulator "
        f"{s['sim']['ttft_ms']:g} ms, {s['sim']['tokens_per_s']:g} tokens/s). *logs-off* is "
        f"level error. CPU on/off: **{s['cpu_on_over_off']}x** "
        f"({s['cpu_on_minus_off_us']:+g} µs per request). Two chatd processes differ by a "
        "few percent even when configured alike (see observability.md's A/A control).\n\n"
        + _table(
            [
                "config",
                "requests",
                "chatd CPU µs/request",
                "by round",
                "log lines/request",
                "request p50 ms",
                "request p95 ms",
            ],
            rows,
        )
    )


def _soak(s: Section) -> str:
    rows = [
        [c["requests"], c["rss_kib"] / 1024, c["cache_entries"], c["chatd_cpu_s"]]
        for c in s["checkpoints"]
    ]
    return (
        f"{s['users']} users, scenario *{s['scenario']}* back to back, simulator "
        f"{s['ttft_ms']:g} ms and {s['tokens_per_s']:g} tokens/s; RSS read after each "
        f"checkpoint once every connection closed. Growth **{s['growth']:.1%}**; "
        f"{s['requests']:,} requests, {s['answered']:,} answered, errors: "
        f"{_counts(s['errors_by_code'])}, {s['cached']:,} answered from the cache; "
        f"{s['wall_s']:g} s. The answer cache is bounded (`cache.max_entries`, 10,000 by "
        "default) and fills with unique questions: growth up to its bound is by design. Put "
        "all the growth down to the entries the cache gained and each cost "
        f"{_n(s.get('kib_per_cache_entry_gained'))} KiB (an upper bound).\n\n"
        + _table(["requests", "RSS MiB", "cache entries", "chatd CPU s so far"], rows)
    )


RENDER: dict[str, tuple[str, Callable[[Section], str]]] = {
    "streams": ("Concurrent streams", _streams),
    "floor": ("The floor: chatd against the bare relay; capacity", _floor),
    "storm": ("Identical questions: flights and cache on against off", _storm),
    "paths": ("Path B against Path A: time to first token", _paths),
    "cancels": ("Cancel to upstream close", _cancels),
    "idle": ("Idle connections", _idle),
    "logging": ("Request logs on against off", _logging),
    "soak": ("Soak", _soak),
}


def markdown(result: Mapping[str, Any]) -> str:
    """The results file: the targets table, each section, the plots, the machine."""
    rows = [
        [r["target"], r["goal"], r["measured"], f"**{r['verdict']}**", r["conditions"]]
        for r in result["targets"]
    ]
    quick = result["mode"] == "quick"
    scaled = (
        " **Quick run: every section is scaled down** (see *measured under*); its verdicts "
        "speak of that load, not of the issue's. `--full` runs the issue's numbers."
        if quick
        else ""
    )
    source = result["chatd"]
    measured = provenance_markdown(source)
    parts = [
        "# Targets of issue 6: will it hold?\n",
        f"`{result['command']}` ({result['elapsed_s']} s; by section: "
        f"{_counts(result['section_seconds'])}); {measured}. Each section starts its own "
        "simulator and server processes; the load generator, the simulator and the server "
        "share this machine's cores with whatever else runs on it, so compare ratios within "
        f"the run, not absolute times across runs.{scaled}\n",
        _table(["target", "goal", "measured", "verdict", "measured under"], rows),
    ]
    for key, (title, render) in RENDER.items():
        section = result["sections"].get(key)
        if section is None:
            continue
        body = f"Failed: {section['failed']}" if "failed" in section else render(section)
        parts.append(f"## {title}\n\n{body}")
    plots = "\n".join(
        f"- ![{p}]({p})" if p.endswith(".png") else f"- {p}" for p in result.get("plots", [])
    )
    parts.append(f"## Plots\n\n{plots}")
    parts.append(f"## Machine\n\n{machine_markdown(result['machine'])}")
    return "\n\n".join(parts) + "\n"
