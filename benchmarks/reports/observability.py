"""The report of ``bench_observability.py``: its results as Markdown (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen import profiling
from loadgen.observability_e2e import PATHS, PROFILE_AREAS
from loadgen.script import report_opening
from machine import machine_markdown

from reports.pipeline import rows

__all__ = ["markdown"]


def _profile_markdown(profiles: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    rows = "\n".join(
        f"| {label} | {v['samples']} | "
        + " | ".join(f"{v['pct'][a]}% ({v['us_per_request'][a]} µs)" for a in PROFILE_AREAS)
        + " |"
        if "pct" in v
        else f"| {label} | {v['skipped']} |"
        for label, v in profiles.items()
    )
    return (
        "\n### Where the CPU went, in situ (py-spy)\n\n"
        f"{p['profile_rounds']} more rounds per configuration (not counted above) under py-spy "
        "at 250 Hz, one configuration at a time. Share of chatd's samples (idle trio worker "
        "threads left out) with a frame in: *structlog calls* (rendering and writing a line, or "
        "dropping it at level error), *write* (the leaf is `WriteLogger.msg`: its write(2)), "
        "*spans* (spans.py, its log calls included), *metrics* (prometheus_client or "
        "metrics.py); µs per request is that share of the configuration's CPU per request "
        "above.\n\n| config | samples | structlog calls | write | spans | metrics |\n"
        f"|---|---|---|---|---|---|\n{rows}\n"
    )


E2E_ROW = (
    "| {label} | {description} | {requests} | **{chatd_cpu_us_per_request}** "
    "| {chatd_system_us_per_request} | {vs_off:.3f} | {log_bytes_per_request:.0f} "
    "| {log_lines_per_request} | {chatd_cpu_busy:.0%} | {requests_per_s} "
    "| {request_p50_ms} / {request_p95_ms} | {frames_per_request} | {sim_cpu_busy:.0%} "
    "| {client_cpu_busy:.0%} | {machine_cores_busy} |"
)
SHAPE_ROW = (
    "| {label} | {path} | {lines_per_request} | {bytes_per_request:.0f} "
    "| {text_chars_per_request:.0f} |"
)


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, e2e, micro, c = result["params"], result["e2e"], result["micro"], result["comparison"]
    off_us = e2e["logs-off"]["chatd_cpu_us_per_request"]
    e2e_rows = rows(
        E2E_ROW, ({**v, "vs_off": v["chatd_cpu_us_per_request"] / off_us} for v in e2e.values())
    )
    by_round = "\n".join(
        f"- {v['label']}: {v['chatd_cpu_us_per_request_by_round']}" for v in e2e.values()
    )
    paired = [("logs-on − logs-off", c["on_minus_off_paired"])]
    if "aa_paired" in c:
        paired.append(("logs-off-2 − logs-off (A/A)", c["aa_paired"]))
    paired_rows = "\n".join(
        f"| {name} | {d['by_round']} | {d['median']} | {d['mean']} | {d['stderr']} |"
        for name, d in paired
    )
    shape_rows = rows(
        SHAPE_ROW,
        (
            {"label": label, "path": path, **s}
            for label, shape in result["log_shape"].items()
            for path, s in shape.items()
            if path in PATHS
        ),
    )
    trace_rows = "\n".join(
        f"| {name} | {v['description']} | "
        + " | ".join(f"{v['paths'][path]['median_us']}" for path in PATHS)
        + f" | **{v['mix_median_us']}** | {v['mix_bytes_per_request']:.0f} "
        f"| {v['mix_lines_per_request']} |"
        for name, v in micro["traces"].items()
    )
    metric_rows = "\n".join(
        f"| `{name}` | {v['median_us']} | {v['min_us']} |"
        for name, v in micro["metrics"].items()
        if isinstance(v, dict)
    )
    extra = []
    if p["include_text"]:
        extra.append("`logs-on-text` adds `CHATD_LOG_INCLUDE_TEXT=true`")
    if p["control"]:
        extra.append(
            "`logs-off-2` is a second logs-off process, the control: how far two chatd "
            "processes differ when nothing does"
        )
    profiles = profiling.profile_section(
        result.get("profiles"), "### Profiles", lambda f: _profile_markdown(f, p)
    )
    title = "Observability: chatd's CPU per request with logs on and off"
    return (
        report_opening(title, result)
        + " The machine is shared and noisy: compare configurations within this run, not "
        "absolute times across runs.\n\n## Conclusion\n\n"
        + "".join(f"- {line}\n" for line in result["conclusions"])
        + "\n## 1. End to end\n\n"
        f"One simulated LLM (ttft {p['sim_ttft_ms']:g} ms, {p['sim_tokens_per_s']:g} tokens/s) "
        "and one chatd process per configuration, all with `CHATD_LOG_FORMAT=json` and "
        "`CHATD_LOG_FILE` (a temporary file); `logs-on` at `CHATD_LOG_LEVEL=info`, `logs-off` at "
        "`error`"
        + "".join(f"; {e}" for e in extra)
        + f". Each round, {p['connections']} WebSocket connections per chatd (opened "
        f"beforehand) each ask {p['chats_per_connection']} questions one after another, the "
        'paths in turn (chit-chat: `direct`; "what is N*M?": `tools`; a confident FAQ '
        "question: `tool_stream`), every one asked for the first time (checked: the expected "
        f"path, `cached` and `shared` false). {p['rounds']} measured rounds per configuration "
        "after a warm-up round, taken in turn with the order reversed every other round. chatd "
        "CPU is its utime+stime over the rounds, read from its CPU-time clock "
        "(`clock_getcpuclockid`, in ns; /proc/PID/stat counts the same in 10 ms ticks, too "
        "coarse for one round, and gives the *system* part, over all rounds). Log bytes and "
        "lines are the log file's growth over the rounds.\n\n"
        "| config | logging | requests | chatd CPU µs/request | of which system | vs logs-off "
        "| log bytes/request | log lines/request | chatd CPU busy | requests/s "
        "| request p50 / p95 ms | frames/request | sim CPU busy | client CPU busy "
        "| machine cores busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{e2e_rows}\n\nchatd CPU µs/request by round:\n\n{by_round}\n\n"
        "Differences round by round (µs/request; each pair measured one after the other):\n\n"
        "| difference | by round | median | mean | s.e. |\n|---|---|---|---|---|\n"
        f"{paired_rows}\n\n"
        "Lines and bytes per request by path, from each log file as a whole (warm-up included; "
        "a request's lines found by `request_id`):\n\n"
        "| config | path | lines/request | bytes/request | text chars in summary |\n"
        f"|---|---|---|---|---|\n{shape_rows}\n{profiles}\n## 2. In process\n\n"
        "One request's `RequestTrace` as the pipeline makes it (a logger bound to the "
        "connection's context, the spans each path writes in the end-to-end log, the router and "
        "answer spans marked once per streamed event, then the `stream` span and the summary), "
        "inside `trio.run`, logged through chatd's own `configure_logging`; "
        f"{p['micro_requests']} requests per path and variant, back to back, "
        f"{p['micro_repeats']} repeats interleaved (median µs per request shown); *mix* is the "
        "mean of the three paths, as the end-to-end load mixes them.\n\n"
        "| variant | logging | direct µs | tools µs | tool_stream µs | mix µs | bytes/request "
        f"| lines/request |\n|---|---|---|---|---|---|---|---|\n{trace_rows}\n\n"
        f"Metrics, µs per call ({p['metrics_calls']} calls, {p['micro_repeats']} repeats; "
        "`request_finished` cycles the three paths' labels):\n\n"
        f"| call | median µs | min µs |\n|---|---|---|\n{metric_rows}\n\n"
        f"Per request (`request_finished` + `cancelled`): {micro['metrics']['per_request_us']} "
        "µs. `frames_sent` is called once per batch of frames the writer sends.\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )
