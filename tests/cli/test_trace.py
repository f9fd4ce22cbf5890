"""``chatd trace`` on a log that chatd's own logging wrote: timelines, listing, --follow."""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import structlog
import trio
import trio.testing
from rich.console import Console

from chatd.cli import trace as trace_cli
from chatd.cli.trace import LogIndex, add_trace_arguments, follow, render_listing, render_timeline
from chatd.config import LogSettings
from chatd.observability import configure_logging
from chatd.observability.spans import RequestTrace

NOISE = [
    "chatd starting (not JSON)",
    '["a", "list"]',
    '{"event": "server listening", "level": "info"}',
    '{"event": "span", "request_id": "req_ok", "span": "half a span"}',
]


async def path_a_with_tools() -> None:
    """req_ok: queued, prepared, routed to two tools (one times out), answered."""
    trace = RequestTrace("req_ok")
    with structlog.contextvars.bound_contextvars(request_id="req_ok"):
        with trace.span("admission"):
            pass
        with trace.span("prepare") as prepare:
            await trio.sleep(0.2)
            trace.record("queue", trace.started, trace.clock(), parent=prepare)
            await trio.sleep(0.05)
        with trace.span("router") as router:
            await trio.sleep(0.3)
            router.mark()
            await trio.sleep(0.05)

        async def tool(name: str, seconds: float, error: str | None) -> None:
            start = trace.clock()
            await trio.sleep(seconds)
            outcome = "ok" if error is None else "error"
            trace.record("tool", start, trace.clock(), outcome=outcome, error=error, tool=name)

        with trace.span("tools"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tool, "calculator", 0.01, None)
                nursery.start_soon(tool, "faq", 0.4, "timed out after 0.4 s")
        with trace.span("answer") as answer:
            await trio.sleep(0.2)
            answer.mark()
            first = trace.clock()
            await trio.sleep(1.0)
        trace.record("stream", first, trace.clock(), frames=12)
        trace.summary(path="tools", outcome="done", tokens={"prompt": 120, "completion": 52})


async def failed_router() -> None:
    """req_bad: the router call fails and the request ends in an error."""
    trace = RequestTrace("req_bad")
    with structlog.contextvars.bound_contextvars(request_id="req_bad"):
        try:
            with trace.span("router", breaker="closed") as router:
                await trio.sleep(0.1)
                router.set(breaker="open")
                raise ConnectionError("upstream 503")
        except ConnectionError:
            structlog.get_logger().info("request failed", code="upstream_unavailable")
        trace.summary(outcome="upstream_unavailable", error="the LLM is unavailable")


def write_log(*requests: Callable[[], object]) -> list[str]:
    """The JSON lines chatd's logging set-up writes for ``requests``, run one by one."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=stream)
    try:

        async def run_all() -> None:
            for request in requests:
                await request()  # type: ignore[misc]

        trio.run(run_all, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        structlog.configure(**saved)
    return stream.getvalue().splitlines(keepends=True)


@pytest.fixture
def ok_lines() -> list[str]:
    return write_log(path_a_with_tools)


@pytest.fixture
def bad_lines() -> list[str]:
    return write_log(failed_router)


@pytest.fixture
def log_file(tmp_path: Path, ok_lines: list[str], bad_lines: list[str]) -> Path:
    path = tmp_path / "chatd.log"
    path.write_text(
        "".join([NOISE[0] + "\n", *ok_lines, *[n + "\n" for n in NOISE[1:]], *bad_lines])
    )
    return path


def console() -> Console:
    return Console(record=True, width=120, file=io.StringIO())


def index(path: Path, request_id: str | None = None) -> LogIndex:
    result = LogIndex(request_id)
    for line in path.read_bytes().splitlines():
        result.add(line)
    return result


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_trace_arguments(parser)
    return parser.parse_args(argv)


def test_timeline_draws_the_span_tree_with_bars_and_timings(log_file: Path) -> None:
    """One request: spans in tree order with guides, bars on one scale, outcomes, timings."""
    out = console()
    render_timeline(out, index(log_file, "req_ok").requests["req_ok"])
    text = out.export_text()
    rows = [line.split()[0:2] for line in text.splitlines() if "█" in line]
    assert rows == [
        ["request", "0.0"],
        ["├─", "admission"],
        ["├─", "prepare"],
        ["│", "└─"],
        ["├─", "router"],
        ["├─", "tools"],
        ["│", "├─"],
        ["│", "└─"],
        ["├─", "answer"],
        ["└─", "stream"],
    ]
    # total 2200 ms over 40 columns: the router span (250 ms + 350 ms) is columns 4-10
    router = next(line for line in text.splitlines() if "router" in line)
    assert "····███████·····························" in router
    assert "250 ms" in router and "350 ms" in router and "ttft_ms=300.0" in router
    faq = next(line for line in text.splitlines() if "tool=faq" in line)
    assert "error" in faq and "timed out after 0.4 s" in faq and "400 ms" in faq
    assert "0 ⟶ 2200 ms" in text
    assert "req_ok tools done  ttft 1200 ms  total 2200 ms" in text
    assert "tokens prompt=120 completion=52" in text
    timings = text[text.index("timings") :]
    for label in ("queue", "prepare", "router ttft", "tools", "answer ttft", "first token"):
        assert label in timings
    assert timings.split("│")[1:8] == [
        " 200 ms ",
        " 50.0 ms ",
        "      300 ms ",
        " 400 ms ",
        "      200 ms ",
        "     1200 ms ",
        " 2200 ms ",
    ]


def test_the_summary_alone_draws_the_same_timeline(
    log_file: Path, ok_lines: list[str], tmp_path: Path
) -> None:
    """Below debug level spans are not lines of their own: the summary's list of
    them draws the same timeline."""
    only_summary = tmp_path / "info.log"
    only_summary.write_text("".join(line for line in ok_lines if '"event":"span"' not in line))
    assert '"event":"span"' in "".join(ok_lines)
    drawn = []
    for path in (log_file, only_summary):
        out = console()
        render_timeline(out, index(path, "req_ok").requests["req_ok"])
        drawn.append(out.export_text())
    assert drawn[0] == drawn[1]


def test_timeline_of_a_failure_shows_the_error_and_log_lines(log_file: Path) -> None:
    """A failed request: its outcome, the span's exception, the other lines it logged."""
    out = console()
    render_timeline(out, index(log_file, "req_bad").requests["req_bad"])
    text = " ".join(out.export_text().split())  # undo the details column's wrapping
    assert "upstream_unavailable" in text and "the LLM is unavailable" in text
    assert "ConnectionError: upstream 503" in text and "breaker=open" in text
    assert "info request failed code=upstream_unavailable" in text


def test_listing_shows_the_slowest_and_the_failed(log_file: Path) -> None:
    """The slowest table is by total time; every failure is listed with its error."""
    out = console()
    render_listing(out, index(log_file), slowest=1)
    text = out.export_text()
    slowest, failed = text.split("failed: 1")
    assert "slowest 1 of 2" in slowest and "req_ok" in slowest and "req_bad" not in slowest
    assert "req_bad" in failed and "upstream_unavailable" in failed
    assert "the LLM is unavailable" in failed and "req_ok" not in failed


def test_run_trace_draws_and_exits_0(log_file: Path) -> None:
    """``chatd trace LOG ID`` and ``chatd trace LOG`` draw and succeed."""
    out = console()
    assert trace_cli.run_trace(args(str(log_file), "req_ok"), out) == 0
    assert trace_cli.run_trace(args(str(log_file), "--slowest", "5"), out) == 0
    text = out.export_text()
    assert "request req_ok" in text and "slowest 2 of 2" in text


def test_unknown_request_is_one_line_and_exit_1(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id the log does not hold: one line on stderr, status 1."""
    assert trace_cli.run_trace(args(str(log_file), "req_nope"), console()) == 1
    assert capsys.readouterr().err == f"chatd trace: no request req_nope in the log ({log_file})\n"


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A log that is not there: a clear message, status 2 (so too with --follow)."""
    missing = str(tmp_path / "nope.log")
    assert trace_cli.run_trace(args(missing), console()) == 2
    assert trace_cli.run_trace(args(missing, "--follow"), console()) == 2
    err = capsys.readouterr().err
    assert err.count(f"chatd trace: cannot read {missing}: No such file or directory\n") == 2


def test_slowest_must_be_positive() -> None:
    """``--slowest 0`` is refused by the parser."""
    with pytest.raises(SystemExit):
        args("chatd.log", "--slowest", "0")


def test_ctrl_c_while_following_exits_0(log_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C ends ``--follow`` with status 0."""

    def interrupted(*_args: object, **_kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(trace_cli, "follow", interrupted)
    assert trace_cli.run_trace(args(str(log_file), "--follow"), console()) == 0


Following = Callable[..., tuple[Console, list[int]]]
"""Starts following a log (:func:`follow`'s keywords); its console and exit status."""


@pytest.fixture
def following() -> Iterator[Following]:
    """Run :func:`follow` in a thread; always stopped and joined (bounded) at the end."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(path: Path, **kwargs: object) -> tuple[Console, list[int]]:
        out, status = console(), []
        thread = threading.Thread(
            target=lambda: status.append(follow(str(path), out, poll_s=0.01, stop=stop, **kwargs))  # type: ignore[arg-type]
        )
        thread.start()
        threads.append(thread)
        return out, status

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def ok_log(tmp_path: Path, ok_lines: list[str]) -> Path:
    """A log holding the successful request alone."""
    path = tmp_path / "chatd.log"
    path.write_text("".join(ok_lines))
    return path


def wait_for(out: Console, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (seen := out.export_text(clear=False)):
        assert time.monotonic() < deadline, f"{text!r} not printed; got:\n{seen}"
        time.sleep(0.01)
    return seen


def test_follow_prints_each_summary_as_its_request_completes(
    ok_log: Path, bad_lines: list[str], following: Following
) -> None:
    """The summaries already there, then new ones, also when a line arrives in pieces."""
    out, _ = following(ok_log)
    wait_for(out, "req_ok tools done")
    *spans, summary = bad_lines
    with ok_log.open("a") as log:
        log.write("".join(spans) + "not json\n" + summary[:30])
        log.flush()
        time.sleep(0.05)  # the follower sees half a line and must wait for the rest
        log.write(summary[30:])
    seen = wait_for(out, "req_bad")
    assert "upstream_unavailable  ttft —  total 100 ms  the LLM is unavailable" in seen
    assert seen.count("req_ok") == 1 and seen.count("req_bad") == 1


def test_follow_starts_again_when_the_log_is_truncated(
    ok_log: Path, bad_lines: list[str], following: Following
) -> None:
    """A log cut to nothing (copytruncate rotation) is read again from its start."""
    out, _ = following(ok_log)
    wait_for(out, "req_ok")
    ok_log.write_text("".join(bad_lines))
    wait_for(out, "req_bad")


def test_follow_with_an_id_draws_that_request_when_it_completes(
    tmp_path: Path, bad_lines: list[str], following: Following
) -> None:
    """``--follow REQUEST_ID`` waits for the request's summary, draws it, exits 0."""
    path = tmp_path / "chatd.log"
    *spans, summary = bad_lines
    path.write_text("".join(spans))
    out, status = following(path, request_id="req_bad")
    time.sleep(0.05)
    assert status == [] and "request req_bad" not in out.export_text(clear=False)
    with path.open("a") as log:
        log.write(summary)
    wait_for(out, "timings")
    deadline = time.monotonic() + 5
    while not status and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status == [0]
    assert "ConnectionError: upstream 503" in " ".join(out.export_text().split())


def test_generated_log_is_chatd_json(ok_lines: list[str]) -> None:
    """The fixture is what chatd writes: JSON lines with timestamp, level and event."""
    first = orjson.loads(ok_lines[0])
    assert {"timestamp", "level", "event", "request_id", "span_id"} <= first.keys()


LONG_IDS = ("req_f0f91da19a473c2e", "req_f0f91da1ffe01b7d", "req_3c0ffee5d00d1e55")


@pytest.fixture
def real_ids_log(tmp_path: Path, ok_lines: list[str]) -> Path:
    """The same request three times under ids as long as chatd makes them."""
    path = tmp_path / "ids.log"
    path.write_text("".join(line.replace("req_ok", rid) for rid in LONG_IDS for line in ok_lines))
    return path


def narrow() -> Console:
    return Console(record=True, width=80, file=io.StringIO())


def test_at_80_columns_a_unique_prefix_draws_and_nothing_is_cut(real_ids_log: Path) -> None:
    out = narrow()
    assert trace_cli.run_trace(args(str(real_ids_log), "req_3c0f"), out) == 0
    text = out.export_text()
    assert "request req_3c0ffee5d00d1e55" in text
    assert "…" not in text
    header = next(line for line in text.splitlines() if "span" in line and "outcome" in line)
    for column in ("start", "duration", "outcome", "details"):
        assert column in header.split()


def test_at_80_columns_the_listing_shows_whole_ids(real_ids_log: Path) -> None:
    out = narrow()
    assert trace_cli.run_trace(args(str(real_ids_log)), out) == 0
    text = out.export_text()
    assert all(rid in text for rid in LONG_IDS) and "…" not in text


def test_an_ambiguous_prefix_names_the_candidates(
    real_ids_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace_cli.run_trace(args(str(real_ids_log), "req_f0f9"), narrow()) == 1
    error = capsys.readouterr().err
    assert "2 requests start with req_f0f9" in error
    assert LONG_IDS[0] in error and LONG_IDS[1] in error
