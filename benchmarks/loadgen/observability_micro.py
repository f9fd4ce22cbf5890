"""Part 2 of ``bench_observability.py``: the metrics calls and the traces, in process.

What chatd's pushed metrics cost per call, and what one request's trace costs per path when
logged by chatd's own structlog set-up in each way (to a file, to memory, with the text,
filtered), timed in a loop.
"""

from __future__ import annotations

import collections
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog
import trio

from chatd.config import LogSettings
from chatd.observability import Metrics, RequestTrace, configure_logging
from loadgen.observability_e2e import PATHS, Params, question

__all__ = ["micro_metrics", "micro_traces"]


def us_per_call(loop: Callable[[int], None], n: int, repeats: int) -> dict[str, float]:
    """µs per iteration of ``loop(n)``, over ``repeats`` runs: median and min."""
    loop(max(1, n // 10))  # warm up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        loop(n)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return {"median_us": round(statistics.median(samples), 3), "min_us": round(min(samples), 3)}


def micro_metrics(params: Params) -> dict[str, Any]:
    """What chatd's pushed metrics cost per call (prometheus_client counters and
    histograms, with their label lookups)."""
    metrics = Metrics()
    ttfts = (0.02, 0.05, 0.3, 1.2)

    def finished(n: int) -> None:
        for i in range(n):
            metrics.request_finished(PATHS[i % 3], "done", ttfts[i % 4], 0.4, 40, False, False)

    def cancelled(n: int) -> None:
        for _ in range(n):
            metrics.cancelled("client_cancel")

    def frames(n: int) -> None:
        for _ in range(n):
            metrics.frames_sent(3)

    loops = {"request_finished": finished, "cancelled": cancelled, "frames_sent": frames}
    result: dict[str, Any] = {
        name: us_per_call(loop, params.metrics_calls, params.micro_repeats)
        for name, loop in loops.items()
    }
    result["per_request_us"] = round(
        result["request_finished"]["median_us"] + result["cancelled"]["median_us"], 3
    )
    return result


# What each path's request writes, as chatd/pipeline/chat.py and answer.py do
# (checked against the end-to-end log: see ``log_shape``): the spans in order,
# the streamed events each LLM call's span is marked on, and the summary.
ANSWERS = {
    "direct": "Once upon a time " + "the sea was calm and the gulls were quiet, " * 5,
    "tools": "The result is 1517.",
    "tool_stream": "Open Settings, choose Account, then Reset password; " * 3,
}
TOKENS = {"direct": 60, "tools": 13, "tool_stream": 0}


def trace_request(path: str, include_text: bool, n: int) -> None:
    """One request's trace, made and filled as the pipeline does (inside trio)."""
    request_id = f"req_{n:016x}"
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        context = structlog.contextvars.get_contextvars()
        trace = RequestTrace(
            request_id,
            log=structlog.get_logger("chatd.trace").bind(**context),
            include_text=include_text,
        )
        with trace.span("admission"):
            pass
        with trace.span("prepare") as prepare:
            prepare.set(messages=2)
        with trace.span("cache") as lookup:
            lookup.set(hit=False)
        with trace.span("flight") as flight:
            flight.set(created=True)
            with trace.span("router") as router:
                for _ in range(TOKENS["direct"] if path == "direct" else 4):
                    router.mark()
                if path == "tool_stream":
                    with trace.span("tools", tools="frequently_asked"):
                        now = trace.clock()
                        trace.record("tool", now - 0.001, now, outcome="ok", error=None,
                                     tool="frequently_asked")  # fmt: skip
                    with trace.span("tool_stream", tool="frequently_asked"):
                        pass
                else:
                    router.set(
                        finish_reason="tool_calls" if path == "tools" else "stop",
                        tool_calls=int(path == "tools"),
                    )
            if path == "tools":
                with trace.span("tools", tools="calculator"):
                    now = trace.clock()
                    trace.record("tool", now - 0.0001, now, outcome="ok", error=None,
                                 tool="calculator")  # fmt: skip
                with trace.span("answer") as answer:
                    for _ in range(TOKENS["tools"] + 1):
                        answer.mark()
                    answer.set(finish_reason="stop")
        trace.record("stream", trace.started, trace.clock(), tokens=TOKENS[path])
        trace.summary(
            path=path,
            outcome="done",
            error=None,
            shared=False,
            cached=False,
            tokens={"prompt": 27 if path == "direct" else 81, "completion": TOKENS[path]},
            queue_ms=0.0,
            message=question(path, n),
            answer=ANSWERS[path],
        )


# How the in-process traces are logged: name: (description, level, include_text, to a
# line-buffered file rather than an in-memory stream).
VARIANTS = {
    "json-file": ("level info, JSON to a line-buffered file (as log.file)", "info", False, True),
    "json-memory": ("level info, JSON to an in-memory stream", "info", False, False),
    "json-memory-text": ("as json-memory, with include_text", "info", True, False),
    "filtered": (
        "level error: every span and summary call filtered (logs off)",
        "error",
        False,
        False,
    ),
}


def micro_traces(params: Params, workdir: Path) -> dict[str, Any]:
    """µs per request of each path's trace under each variant; the repeats
    interleave the variants and paths, so drift in the machine falls on all."""
    samples: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    written: dict[tuple[str, str], tuple[float, float]] = {}
    n = params.micro_requests

    def run(level: str, include_text: bool, path: str, stream: TextIO, first: int) -> float:
        configure_logging(LogSettings(level=level, format="json"), stream=stream)
        started = time.perf_counter()
        for i in range(first, first + n):
            trace_request(path, include_text, i)
        return (time.perf_counter() - started) / n * 1e6

    async def main(file: TextIO) -> None:
        with structlog.contextvars.bound_contextvars(connection_id="conn_1"):
            for repeat in range(-1, params.micro_repeats):  # repeat -1 warms up
                for name, (_description, level, include_text, to_file) in VARIANTS.items():
                    for path in PATHS:
                        stream = file if to_file else io.StringIO()
                        us = run(level, include_text, path, stream, (repeat + 1) * n)
                        if repeat >= 0:
                            samples[name, path].append(us)
                        if isinstance(stream, io.StringIO):
                            text = stream.getvalue()
                            written[name, path] = (len(text) / n, text.count("\n") / n)

    try:
        with open(workdir / "micro.jsonl", "a", encoding="utf-8", buffering=1) as file:
            trio.run(main, file)
    finally:
        structlog.reset_defaults()
    result: dict[str, Any] = {}
    for name, (description, _level, _text, to_file) in VARIANTS.items():
        per_path = {}
        for path in PATHS:
            s = samples[name, path]
            # The file gets what the memory stream gets.
            size, lines = written["json-memory" if to_file else name, path]
            per_path[path] = {
                "median_us": round(statistics.median(s), 2),
                "min_us": round(min(s), 2),
                "bytes_per_request": round(size, 1),
                "lines_per_request": round(lines, 2),
            }
        mix = {"median_us": 2, "bytes_per_request": 1, "lines_per_request": 2}  # and digits
        result[name] = {
            "description": description,
            "paths": per_path,
            **{
                f"mix_{key}": round(statistics.fmean(per_path[p][key] for p in PATHS), digits)
                for key, digits in mix.items()
            },
        }
    return result
