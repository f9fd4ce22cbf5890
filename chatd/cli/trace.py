"""``chatd trace``: read chatd's JSON log back as request timelines (design.md).

``chatd trace LOG REQUEST_ID`` draws that request's spans as a tree, each with
a bar on one time scale, then its summary's timings. ``chatd trace LOG`` lists
the slowest requests and every failed one. ``--follow`` reads the log as it
grows and prints each request's summary as it completes (with a REQUEST_ID: it
waits for that request, then draws it). Lines that are not JSON, or lack the
fields, are skipped. Renderers take a :class:`rich.console.Console`, so tests
record what they draw. Reads the log only: talks to no server.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatd.cli.trace_log import LINE_FIELDS, LogIndex, Request, Span, find
from chatd.observability.spans import ROOT_SPAN_ID

__all__ = [
    "LogIndex",
    "add_trace_arguments",
    "follow",
    "render_listing",
    "render_timeline",
    "run_trace",
    "summary_line",
]

BAR_WIDTH: Final = 40
"""The bars' width on a wide terminal; a narrow one leaves the rest of a row
what it needs (:func:`bar_width`)."""
ENDED_WELL: Final = frozenset({"done", "cancelled"})
"""Summary outcomes that are not failures; any other (an error code) is."""
OUTCOME_STYLES: Final = {"ok": "green", "done": "green", "cancelled": "yellow", "error": "red"}
TIMINGS: Final = (
    "queue_ms",
    "prepare_ms",
    "router_ttft_ms",
    "tools_ms",
    "answer_ttft_ms",
    "first_token_ms",
    "total_ms",
)
"""The summary's timings, in the order a request spends them (label: the name less ``_ms``)."""


def _ms(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def bar_width(console: Console) -> int:
    """Bars as wide as the terminal allows, beside about 70 columns of the rest."""
    return max(8, min(BAR_WIDTH, console.width - 70))


def _bar(start: float, duration: float, scale: float, style: str, width: int) -> Text:
    first = min(int(start / scale * width), width - 1)
    last = min(max(math.ceil((start + duration) / scale * width), first + 1), width)
    bar = Text("·" * first, style="dim")
    bar.append("█" * (last - first), style=style)
    bar.append("·" * (width - last), style="dim")
    return bar


def _fields(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _root(request: Request) -> Span:
    """The request's own span, from its summary (or its spans, if none yet)."""
    summary = request.summary or {}
    end = max((s.start + s.duration for s in request.spans), default=0.0)
    outcome = str(summary.get("outcome", "running?"))
    total = summary.get("total_ms")
    duration = float(total) if isinstance(total, int | float) else end
    error = None if outcome in ENDED_WELL else summary.get("error")
    flags = {k: summary[k] for k in ("path", "shared", "cached") if summary.get(k)}
    return Span("request", ROOT_SPAN_ID, None, 0.0, duration, outcome, error, flags)


def _walk(request: Request) -> Iterator[tuple[str, Span]]:
    """Spans depth first, children by start, each with its tree guides."""
    ids = {s.span_id for s in request.spans}
    children: dict[int | None, list[Span]] = {}
    for span in request.spans:
        parent = span.parent_id if span.parent_id in ids else ROOT_SPAN_ID
        children.setdefault(parent, []).append(span)

    def below(span_id: int, indent: str) -> Iterator[tuple[str, Span]]:
        kids = sorted(children.get(span_id, ()), key=lambda s: (s.start, s.span_id))
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            yield indent + ("└─ " if last else "├─ "), kid
            yield from below(kid.span_id, indent + ("   " if last else "│  "))

    yield "", _root(request)
    yield from below(ROOT_SPAN_ID, "")


def render_timeline(console: Console, request: Request) -> None:
    """Draw one request: its spans as a tree with bars, then its timings."""
    root = _root(request)
    scale = max([root.duration, *(s.start + s.duration for s in request.spans), 1e-9])
    table = Table(title=f"request {request.request_id}", title_justify="left", box=None)
    bar = f"0 ⟶ {_ms(scale)}"
    # At any width, nothing is cut with "…": headers and times keep their
    # width, names and details wrap, and only the bars shrink.
    table.add_column("span", overflow="fold")
    for column in ("start", "duration"):
        table.add_column(column, min_width=len("duration"), no_wrap=True)
    table.add_column(bar, min_width=len(bar), no_wrap=True, overflow="crop")
    table.add_column("outcome", min_width=len("cancelled"), no_wrap=True)
    table.add_column("details")
    for guides, span in _walk(request):
        style = OUTCOME_STYLES.get(span.outcome, "red")
        details = Text(_fields(span.attributes))
        if span.error:
            details.append((" " if details else "") + span.error, style="red")
        table.add_row(
            guides + span.name,
            _ms(span.start),
            _ms(span.duration),
            _bar(span.start, span.duration, scale, style, bar_width(console)),
            Text(span.outcome, style=style),
            details,
        )
    console.print(table)
    summary = request.summary
    if summary is None:
        console.print("no summary yet: the request is still running, or its process stopped")
    else:
        timings = Table(title="timings", title_justify="left")
        for key in TIMINGS:
            name = key.removesuffix("_ms").replace("_", " ")
            timings.add_column(name, justify="right", overflow="fold")
        timings.add_row(*(_ms(summary.get(key)) for key in TIMINGS))
        console.print(summary_line(summary))
        console.print(timings)
    for note in request.notes:
        fields = {k: v for k, v in note.items() if k not in LINE_FIELDS}
        console.print(f"{note.get('level', '')} {note.get('event')} {_fields(fields)}".strip())


def summary_line(summary: Mapping[str, Any]) -> Text:
    """One request on one line: time, id, path, outcome, TTFT, total, tokens."""
    outcome = str(summary.get("outcome", "?"))
    line = Text(f"{str(summary.get('timestamp', ''))[11:23]} ".lstrip())
    line.append(f"{summary.get('request_id')} ", style="bold")
    line.append(f"{summary.get('path') or '-'} ")
    line.append(outcome, style=OUTCOME_STYLES.get(outcome, "red"))
    line.append(f"  ttft {_ms(summary.get('first_token_ms'))}")
    line.append(f"  total {_ms(summary.get('total_ms'))}")
    flags = [flag for flag in ("shared", "cached") if summary.get(flag)]
    if summary.get("tokens") is not None:
        tokens = summary["tokens"]
        flags.append(f"tokens {_fields(tokens) if isinstance(tokens, dict) else tokens}")
    if outcome not in ENDED_WELL and summary.get("error"):
        flags.append(str(summary["error"]))
    if flags:
        line.append("  " + " · ".join(flags), style="dim")
    return line


def _listing(title: str, summaries: list[dict[str, Any]], *, errors: bool) -> Table:
    table = Table(title=title, title_justify="left")
    width = max((len(str(s["request_id"])) for s in summaries), default=10)
    for column in ("request_id", "path", "outcome", "ttft", "total", "time"):
        table.add_column(
            column,
            justify="right" if column in ("ttft", "total") else "left",
            min_width=width if column == "request_id" else len(column),
            no_wrap=column == "request_id",  # whole, to copy and paste
            overflow="fold",
        )
    if errors:
        table.add_column("error", overflow="fold")
    for s in summaries:
        outcome = str(s.get("outcome", "?"))
        row = [
            str(s["request_id"]),
            str(s.get("path") or "-"),
            outcome,
            _ms(s.get("first_token_ms")),
        ]
        row += [_ms(s.get("total_ms")), str(s.get("timestamp", ""))[11:23]]
        row += [str(s.get("error", ""))] if errors else []
        table.add_row(*row, style=None if outcome in ENDED_WELL else "red")
    return table


def render_listing(console: Console, index: LogIndex, slowest: int) -> None:
    """The ``slowest`` requests by ``total_ms``, then every failed one."""
    summaries = [r.summary for r in index.requests.values() if r.summary is not None]
    if not summaries:
        console.print("no request summaries in the log")
        return

    def total(summary: Mapping[str, Any]) -> float:
        value = summary.get("total_ms")
        return float(value) if isinstance(value, int | float) else -1.0

    top = sorted(summaries, key=total, reverse=True)[:slowest]
    console.print(_listing(f"slowest {len(top)} of {len(summaries)}", top, errors=False))
    failed = [s for s in summaries if s.get("outcome") not in ENDED_WELL]
    if failed:
        console.print(_listing(f"failed: {len(failed)}", failed, errors=True))


def _complete_lines(file: IO[bytes], pending: bytearray) -> Iterator[bytes]:
    """The whole lines readable now; a line still being written waits in ``pending``."""
    while chunk := file.readline():
        pending += chunk
        if pending.endswith(b"\n"):
            yield bytes(pending)
            pending.clear()


def follow(
    path: str,
    console: Console,
    *,
    request_id: str | None = None,
    backlog: int = 10,
    poll_s: float = 0.2,
    stop: threading.Event | None = None,
) -> int:
    """Like ``tail -f``: print the last ``backlog`` summaries, then each new one
    as its request completes, until ``stop`` is set (or Ctrl-C). With
    ``request_id``: wait for that request's summary, draw it, return 0.
    A log truncated under it is read again from its start."""
    stop = stop or threading.Event()
    index = LogIndex(request_id)
    pending = bytearray()
    recent: deque[dict[str, Any]] = deque(maxlen=backlog)
    with open(path, "rb") as file:
        for raw in _complete_lines(file, pending):
            if (done := index.add(raw)) is not None and done.summary is not None:
                recent.append(done.summary)
        if request_id is None:
            for summary in recent:
                console.print(summary_line(summary))
        while True:
            if request_id is not None:
                request = find(index, request_id)
                if not isinstance(request, str) and request.summary is not None:
                    render_timeline(console, request)
                    return 0
            if stop.wait(poll_s):
                return 0
            if os.fstat(file.fileno()).st_size < file.tell():  # truncated: start again
                file.seek(0)
                pending.clear()
            for raw in _complete_lines(file, pending):
                if (done := index.add(raw)) is not None and request_id is None:
                    assert done.summary is not None
                    console.print(summary_line(done.summary))


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chatd trace``, added to its (sub)parser."""
    parser.add_argument("logfile", help="chatd's JSON log (log.format = 'json')")
    parser.add_argument(
        "request_id", nargs="?", help="draw this request's timeline (any unique start of its id)"
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep reading as the log grows; Ctrl-C ends"
    )
    parser.add_argument(
        "--slowest", type=_positive, default=10, metavar="N", help="list N requests (default 10)"
    )


def run_trace(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run ``chatd trace``: 0 when drawn, 1 for an unknown request, 2 for a bad file."""
    console = console or Console()
    try:
        if args.follow:
            return follow(args.logfile, console, request_id=args.request_id)
        index = LogIndex(args.request_id)
        with open(args.logfile, "rb") as file:
            for raw in file:
                index.add(raw)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:  # missing, a directory, unreadable
        print(f"chatd trace: cannot read {args.logfile}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.request_id is None:
        render_listing(console, index, args.slowest)
        return 0
    request = find(index, args.request_id)
    if isinstance(request, str):
        print(f"chatd trace: {request} ({args.logfile})", file=sys.stderr)
        return 1
    render_timeline(console, request)
    return 0
