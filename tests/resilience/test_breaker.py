"""The circuit breaker on trio's virtual clock: every transition at its exact time."""

from __future__ import annotations

import pytest
import structlog
import trio

from chatd.config import BreakerSettings
from chatd.exceptions import (
    BreakerOpen,
    ClientError,
    DeadlineExceeded,
    UpstreamError,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatd.resilience import CircuitBreaker, default_is_failure


def breaker(**settings: float | None) -> CircuitBreaker:
    return CircuitBreaker("llm", BreakerSettings(**settings))  # type: ignore[arg-type]


def ratio_breaker() -> CircuitBreaker:
    """A breaker judged by its failure ratio alone: 0.5, over 4 calls or more in 10 s."""
    return breaker(failure_threshold=100, failure_ratio=0.5, min_calls=4, window_s=10)


def state(cb: CircuitBreaker) -> str:
    # A function, not cb.state inline: mypy would keep a property narrowed by
    # one assert across the awaits and calls that change it.
    return cb.state


def assert_stats(cb: CircuitBreaker, **expected: object) -> None:
    """The named fields of the breaker's statistics, as of now, have these values."""
    stats = cb.statistics()
    assert {name: getattr(stats, name) for name in expected} == expected


def succeed(cb: CircuitBreaker) -> None:
    with cb.attempt():
        pass


def fail(cb: CircuitBreaker, exc: BaseException | None = None) -> None:
    exc = exc or UpstreamError("boom")
    with pytest.raises(type(exc)), cb.attempt():
        raise exc


def record(cb: CircuitBreaker, outcomes: str) -> None:
    """One call a letter, in order: ``s`` succeeds, ``f`` fails with an UpstreamError."""
    calls = {"s": succeed, "f": fail}
    for outcome in outcomes:
        calls[outcome](cb)


async def half_open_breaker(**settings: float) -> CircuitBreaker:
    """A breaker opened by one failure (open_timeout_s 5), now just half-open."""
    cb = breaker(failure_threshold=1, open_timeout_s=5, **settings)
    fail(cb)
    await trio.sleep(5)
    return cb


async def test_opens_after_exactly_threshold_consecutive_failures(
    autojump_clock: trio.abc.Clock,
) -> None:
    """N-1 failures and a success start the count again; N in a row open it."""
    cb = breaker(failure_threshold=3)
    record(cb, "ffsff")
    assert_stats(cb, state="closed", consecutive_failures=2)
    await trio.sleep(4)
    fail(cb)
    assert_stats(cb, state="open", opened_at=4.0)


async def test_open_fails_fast_with_the_remaining_open_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """While open, entering raises BreakerOpen at once with the time left until half-open."""
    cb = breaker(failure_threshold=1, open_timeout_s=30)
    await trio.sleep(1)
    fail(cb)
    await trio.sleep(10)
    ran = False
    with pytest.raises(BreakerOpen, match="llm circuit breaker is open") as info, cb.attempt():
        ran = True
    assert not ran
    assert info.value.retry_after_ms == 20_000
    assert info.value.code == "upstream_unavailable"
    assert cb.retry_after_ms() == 20_000
    assert cb.statistics().rejections == 1


async def test_half_open_exactly_at_open_timeout(autojump_clock: trio.abc.Clock) -> None:
    """It reads open a millisecond before open_timeout_s and half-open exactly at it."""
    cb = breaker(failure_threshold=1, open_timeout_s=30)
    fail(cb)
    generation = cb.generation
    await trio.sleep_until(29.999)
    assert state(cb) == "open"
    assert cb.retry_after_ms() == 1
    await trio.sleep_until(30.0)
    assert state(cb) == "half_open"
    assert cb.generation == generation + 1
    assert cb.retry_after_ms() == 0


async def test_probe_success_closes(autojump_clock: trio.abc.Clock) -> None:
    """One successful probe (half_open_max_calls 1) closes the breaker."""
    cb = await half_open_breaker()
    with cb.attempt() as probe:
        assert probe.probe
        await trio.sleep(2)
    assert state(cb) == "closed"
    assert_stats(cb, opened_at=None, consecutive_failures=0, generation=3)


async def test_probe_failure_reopens_with_a_fresh_timeout(autojump_clock: trio.abc.Clock) -> None:
    """A failed probe opens the breaker again for open_timeout_s from when it failed."""
    cb = await half_open_breaker()
    with pytest.raises(UpstreamError), cb.attempt():
        await trio.sleep(2)
        raise UpstreamError("still down")
    assert_stats(cb, state="open", opened_at=7.0)
    assert cb.retry_after_ms() == 5_000
    await trio.sleep_until(11.999)
    assert state(cb) == "open"
    await trio.sleep_until(12.0)
    assert state(cb) == "half_open"


async def test_half_open_max_calls_limits_concurrent_probes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Only half_open_max_calls probes run at once; it closes when that many succeeded."""
    cb = await half_open_breaker(half_open_max_calls=2)

    async def probe(seconds: float) -> None:
        with cb.attempt():
            await trio.sleep(seconds)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe, 1)
        nursery.start_soon(probe, 3)
        await trio.sleep(0.5)
        assert cb.statistics().half_open_in_flight == 2
        with pytest.raises(BreakerOpen, match="probes are busy") as info, cb.attempt():
            pass
        assert info.value.retry_after_ms == 1_000
        await trio.sleep(1)  # t = 6.5: the first probe succeeded at 6, one slot is free
        assert_stats(cb, state="half_open", half_open_in_flight=1)
    assert trio.current_time() == 8.0
    assert_stats(cb, state="closed", rejections=1)


async def test_cancelled_probe_frees_its_slot_and_counts_neither_way(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A probe cancelled by its caller leaves the breaker half-open with the slot free."""
    cb = await half_open_breaker()
    with trio.move_on_after(1), cb.attempt():
        await trio.sleep(10)
    assert trio.current_time() == 6.0
    assert_stats(cb, state="half_open", half_open_in_flight=0, total_successes=0, total_failures=1)
    succeed(cb)
    assert state(cb) == "closed"


async def test_cancellation_in_an_exception_group_counts_as_neither(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Cancelled wrapped by a nursery inside the call is still only cancellation."""
    cb = CircuitBreaker("llm", BreakerSettings(failure_threshold=1), is_failure=lambda exc: True)
    seen: list[BaseException] = []
    with trio.move_on_after(1):
        try:
            with cb.attempt():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep, 10)
                    await trio.sleep(10)
        except BaseException as exc:
            seen.append(exc)
            raise
    assert isinstance(seen[0], BaseExceptionGroup)
    assert_stats(cb, state="closed", total_failures=0)


async def late_failure(cb: CircuitBreaker, seconds: float) -> None:
    """A call admitted now that fails ``seconds`` later."""
    with pytest.raises(UpstreamError), cb.attempt():
        await trio.sleep(seconds)
        raise UpstreamError("late")


async def test_stale_failure_does_not_move_the_open_timer(autojump_clock: trio.abc.Clock) -> None:
    """A call admitted while closed that fails after others opened the breaker changes nothing."""
    cb = breaker(failure_threshold=2, open_timeout_s=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(late_failure, cb, 10)
        await trio.sleep(1)
        record(cb, "ff")
        generation = cb.generation
    assert trio.current_time() == 10.0
    assert_stats(
        cb,
        state="open",
        opened_at=1.0,
        generation=generation,
        retry_after_ms=21_000,
        total_failures=3,
    )


async def test_failure_begun_before_a_close_does_not_reopen(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A call admitted before the breaker opened and closed again cannot open it afterwards."""
    cb = breaker(failure_threshold=1, open_timeout_s=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(late_failure, cb, 20)
        await trio.sleep(1)
        fail(cb)
        await trio.sleep(5)
        succeed(cb)
        assert state(cb) == "closed"
    assert trio.current_time() == 20.0
    assert_stats(cb, state="closed", consecutive_failures=0)


async def test_early_success_then_exception_is_not_a_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    """success() at the first token settles the call; an error later does not count."""
    cb = breaker(failure_threshold=1)
    with pytest.raises(UpstreamError), cb.attempt() as attempt:
        attempt.success()
        raise UpstreamError("stream broke after the first token")
    assert_stats(cb, state="closed", total_successes=1, total_failures=0)


async def test_early_failure_counts_even_if_the_block_ends_cleanly(
    autojump_clock: trio.abc.Clock,
) -> None:
    """failure() settles the call as failed; leaving the block cleanly does not undo it."""
    cb = breaker(failure_threshold=1)
    with cb.attempt() as attempt:
        attempt.failure()
    assert state(cb) == "open"


@pytest.mark.parametrize(
    "exc",
    [ClientError("bad"), ValueError("bug"), KeyboardInterrupt(), BreakerOpen("kb is open")],
)
async def test_errors_that_are_not_the_dependency_count_neither_way(
    autojump_clock: trio.abc.Clock, exc: BaseException
) -> None:
    """Client errors, bugs, interrupts and another breaker being open leave the count alone."""
    cb = breaker(failure_threshold=1)
    fail(cb, exc)
    assert_stats(cb, state="closed", total_failures=0, total_successes=0)


@pytest.mark.parametrize(
    ("exc", "counts"),
    [
        (UpstreamUnavailable("down"), True),
        (UpstreamRefused("503", status=503, body=""), True),
        (UpstreamError("500"), True),
        (UpstreamTimeout("slow", phase="ttft"), True),
        (DeadlineExceeded("late"), True),
        (BreakerOpen("another breaker"), False),
        (ClientError("bad"), False),
        (ValueError("bug"), False),
        (ExceptionGroup("all", [UpstreamError("a"), UpstreamTimeout("b", phase="gap")]), True),
        (ExceptionGroup("nested", [ExceptionGroup("inner", [UpstreamError("a")])]), True),
        (ExceptionGroup("mixed", [UpstreamError("a"), ClientError("b")]), False),
    ],
)
def test_default_is_failure(exc: BaseException, counts: bool) -> None:
    """Unavailable, upstream errors and timeouts count; groups count when every leaf does."""
    assert default_is_failure(exc) is counts


async def test_ratio_opens_once_min_calls_is_reached(autojump_clock: trio.abc.Clock) -> None:
    """The ratio is not judged below min_calls; at min_calls it opens at exactly the ratio."""
    cb = ratio_breaker()
    record(cb, "fff")
    assert state(cb) == "closed"  # 3 of 3 failed, but fewer than min_calls
    succeed(cb)
    assert state(cb) == "closed"  # 3 of 4: only a failure can open it
    fail(cb)
    assert state(cb) == "open"


async def test_ratio_opens_at_exactly_the_ratio(autojump_clock: trio.abc.Clock) -> None:
    """2 failures in 4 calls is a ratio of 0.5 and opens a breaker set to 0.5."""
    cb = ratio_breaker()
    record(cb, "sfs")
    assert state(cb) == "closed"
    fail(cb)
    assert state(cb) == "open"


async def test_old_calls_fall_out_of_the_window(autojump_clock: trio.abc.Clock) -> None:
    """A call stops counting window_s seconds after it ended."""
    cb = ratio_breaker()
    record(cb, "fff")
    await trio.sleep_until(9.999)
    assert cb.statistics().window_calls == 3
    await trio.sleep_until(10.0)
    assert_stats(cb, window_calls=0, window_failures=0)
    fail(cb)
    assert_stats(cb, state="closed", window_calls=1)


async def test_transitions_are_logged(autojump_clock: trio.abc.Clock) -> None:
    """Every transition logs one "breaker state" line with name, from, to and reason."""
    with structlog.testing.capture_logs() as logs:
        cb = await half_open_breaker()
        succeed(cb)
    assert [(e["event"], e["name"], e["from"], e["to"]) for e in logs] == [
        ("breaker state", "llm", "closed", "open"),
        ("breaker state", "llm", "open", "half_open"),
        ("breaker state", "llm", "half_open", "closed"),
    ]
    assert [e["reason"] for e in logs] == [
        "consecutive failures: 1",
        "open for 5 s",
        "probes succeeded: 1",
    ]
    assert logs[0]["log_level"] == "warning"


def test_clock_is_injectable_without_trio() -> None:
    """With its own clock the breaker runs outside trio (as the model test does)."""
    now = [0.0]
    cb = CircuitBreaker("kb", BreakerSettings(failure_threshold=1), clock=lambda: now[0])
    fail(cb)
    now[0] = 30.0
    assert state(cb) == "half_open"


def test_an_attempt_is_entered_once() -> None:
    """Entering the same attempt twice is a bug and says so."""
    cb = CircuitBreaker("kb", BreakerSettings(), clock=lambda: 0.0)
    attempt = cb.attempt()
    with attempt, pytest.raises(RuntimeError, match="only once"), attempt:
        pass
