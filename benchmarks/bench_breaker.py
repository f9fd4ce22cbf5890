"""How fast an open circuit breaker turns a call away, in-process (the report says how).

    python benchmarks/bench_breaker.py [--quick]

Writes benchmarks/results/breaker-failfast{,-quick}.{json,md}.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio
from loadgen.script import markdown_table, script_parser
from machine import describe_machine, machine_markdown, write_results

from chatd.config import BreakerSettings
from chatd.exceptions import BreakerOpen, UpstreamError
from chatd.resilience import CircuitBreaker


def open_breaker() -> CircuitBreaker:
    """A breaker that has just opened and stays open for the whole run."""
    breaker = CircuitBreaker("bench", BreakerSettings(failure_threshold=1, open_timeout_s=3600))
    with structlog.testing.capture_logs(), contextlib.suppress(UpstreamError), breaker.attempt():
        raise UpstreamError("down")
    assert breaker.state == "open"
    return breaker


def fail_fast(breaker: CircuitBreaker) -> None:
    try:
        with breaker.attempt():
            raise AssertionError("an open breaker let a call through")
    except BreakerOpen:
        pass


def pass_through(breaker: CircuitBreaker) -> None:
    with breaker.attempt():
        pass


def timed(
    call: Callable[[CircuitBreaker], None], breaker: CircuitBreaker, n: int
) -> dict[str, float]:
    """p50, p99 and mean µs of ``n`` calls, each timed on its own, after a warm-up."""
    for _ in range(min(n, 10_000)):
        call(breaker)
    ns = []
    clock = time.perf_counter_ns
    gc.disable()  # a collection landing in one sample would only measure the collector
    try:
        for _ in range(n):
            start = clock()
            call(breaker)
            ns.append(clock() - start)
    finally:
        gc.enable()
    cuts = statistics.quantiles(ns, n=100, method="inclusive")
    return {
        "p50_us": round(cuts[49] / 1000, 3),
        "p99_us": round(cuts[98] / 1000, 3),
        "mean_us": round(statistics.fmean(ns) / 1000, 3),
    }


async def run(n: int) -> list[dict[str, Any]]:
    """Inside ``trio.run``: the breaker reads ``trio.current_time()``."""
    closed = CircuitBreaker("bench", BreakerSettings())
    cases = (
        ("open: attempt raises BreakerOpen", fail_fast, open_breaker()),
        ("closed: empty call let through", pass_through, closed),
        ("timer alone (perf_counter_ns pair)", lambda breaker: None, closed),
    )
    return [{"case": case, "calls": n, **timed(call, b, n)} for case, call, b in cases]


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    cells = [[r["case"], r["p50_us"], r["p99_us"], r["mean_us"]] for r in rows]
    return (
        "# Circuit breaker: time to fail fast\n\n"
        f"{rows[0]['calls']} calls per case, each timed alone with `perf_counter_ns` inside "
        "`trio.run`, gc off while timing; the timer's own cost is the last row and is not "
        "subtracted.\n\n"
        f"{markdown_table(['case', 'p50 (µs)', 'p99 (µs)', 'mean (µs)'], cells)}\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def main() -> None:
    parser = script_parser(__doc__, "fewer calls")
    quick = parser.parse_args().quick
    machine = describe_machine()  # before the run: its load average is the one at the start
    rows = trio.run(run, 20_000 if quick else 500_000)
    result = {"benchmark": "circuit breaker fail-fast latency", "rows": rows, "machine": machine}
    name = "breaker-failfast" + ("-quick" if quick else "")
    write_results(Path(__file__).parent / "results", name, result, markdown(result))


if __name__ == "__main__":
    main()
