"""How fast an open circuit breaker turns a call away, in-process.

Times ``with breaker.attempt():`` raising :class:`BreakerOpen` (the fail-fast
path: read trio's clock, build and raise the exception, catch it), one call at
a time with ``perf_counter_ns``, and reports p50/p99/mean in µs. For scale it
also times a call let through a closed breaker with an empty body. Runs inside
``trio.run`` because the breaker reads ``trio.current_time()``. The timer's
own cost is measured and reported, not subtracted. Results go to
benchmarks/results/breaker-failfast.{json,md} (``-quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.script import markdown_table
from machine import describe_machine, machine_markdown, write_results

from chatd.config import BreakerSettings
from chatd.exceptions import BreakerOpen, UpstreamError
from chatd.resilience import CircuitBreaker

RESULTS = Path(__file__).parent / "results"


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


def no_op(breaker: CircuitBreaker) -> None:
    pass


def sample(call: Callable[[CircuitBreaker], None], breaker: CircuitBreaker, n: int) -> list[int]:
    """Nanoseconds per call, each call timed on its own, after a warm-up."""
    for _ in range(min(n, 10_000)):
        call(breaker)
    out = []
    clock = time.perf_counter_ns
    gc.disable()  # a collection landing in one sample would only measure the collector
    try:
        for _ in range(n):
            start = clock()
            call(breaker)
            out.append(clock() - start)
    finally:
        gc.enable()
    return out


def summary(ns: list[int]) -> dict[str, float]:
    cuts = statistics.quantiles(ns, n=100, method="inclusive")
    return {
        "p50_us": round(cuts[49] / 1000, 3),
        "p99_us": round(cuts[98] / 1000, 3),
        "mean_us": round(statistics.fmean(ns) / 1000, 3),
    }


def run(n: int) -> list[dict[str, object]]:
    async def main() -> list[dict[str, object]]:
        closed = CircuitBreaker("bench", BreakerSettings())
        rows: list[dict[str, object]] = []
        for case, call, breaker in (
            ("open: attempt raises BreakerOpen", fail_fast, open_breaker()),
            ("closed: empty call let through", pass_through, closed),
            ("timer alone (perf_counter_ns pair)", no_op, closed),
        ):
            rows.append({"case": case, "calls": n, **summary(sample(call, breaker, n))})
        return rows

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    args = parser.parse_args()
    n = 20_000 if args.quick else 500_000
    rows = run(n)
    result: dict[str, Any] = {
        "benchmark": "circuit breaker fail-fast latency",
        "rows": rows,
        "machine": describe_machine(),
    }
    table = markdown_table(
        ["case", "p50 (µs)", "p99 (µs)", "mean (µs)"],
        [[r["case"], r["p50_us"], r["p99_us"], r["mean_us"]] for r in rows],
    )
    md = (
        "# Circuit breaker: time to fail fast\n\n"
        f"{n} calls per case, each timed alone with `perf_counter_ns` inside `trio.run`, "
        "gc off while timing; the timer's own cost is the last row and is not subtracted.\n\n"
        f"{table}\n\n## Machine\n\n{machine_markdown(result['machine'])}\n"
    )
    write_results(RESULTS, "breaker-failfast" + ("-quick" if args.quick else ""), result, md)


if __name__ == "__main__":
    main()
