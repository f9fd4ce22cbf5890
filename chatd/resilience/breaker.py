"""A circuit breaker on trio's clock: closed, open, half-open.

Closed counts failures and opens after ``failure_threshold`` in a row (or at
``failure_ratio`` over a window). Open fails fast with :class:`BreakerOpen`
for ``open_timeout_s``, then turns half-open and lets ``half_open_max_calls``
probes through at a time. It closes once that many probes have succeeded (with
several allowed, one success is thin evidence) and reopens, with a fresh
timeout, on the first probe that fails. Time is read lazily, with no task.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal

import attrs
import structlog
import trio

from chatd.config import BreakerSettings
from chatd.exceptions import BreakerOpen, DeadlineExceeded, UpstreamError, UpstreamUnavailable

__all__ = [
    "PROBE_RETRY_AFTER_S",
    "Attempt",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "default_is_failure",
]

log = structlog.get_logger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
_Outcome = Literal["success", "failure"] | None

PROBE_RETRY_AFTER_S = 1.0
"""The wait suggested to a call turned away because every probe slot is busy:
the probes answer long before a whole ``open_timeout_s`` (capped at it)."""


def default_is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the dependency is unwell: unreachable, erroring or too slow.

    Client errors and another breaker being open (a :class:`BreakerOpen` from a
    breaker further down) say nothing about this dependency. An exception
    group counts when every one of its leaves counts.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(default_is_failure(leaf) for leaf in exc.exceptions)
    if isinstance(exc, BreakerOpen):
        return False
    return isinstance(exc, UpstreamUnavailable | UpstreamError | DeadlineExceeded)


def _is_cancellation(exc: BaseException) -> bool:
    """``trio.Cancelled``, or a group of nothing else (a nursery inside the call)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(leaf) for leaf in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def _ceil_ms(seconds: float) -> int:
    # Rounding first keeps float noise (29.999999999996 s) from adding a millisecond.
    return max(1, math.ceil(round(seconds * 1000, 6)))


@attrs.frozen
class BreakerStatistics:
    """A snapshot of one breaker, for logs, metrics and tests.

    ``opened_at`` is when it last opened (kept while half-open, None when
    closed); the window counts are kept only when ``failure_ratio`` is set;
    the totals count every call outcome, including stale ones.
    """

    name: str
    state: BreakerState
    generation: int
    consecutive_failures: int
    window_calls: int
    window_failures: int
    opened_at: float | None
    retry_after_ms: int
    half_open_in_flight: int
    total_failures: int
    total_successes: int
    rejections: int
    transitions: Mapping[str, int] = attrs.field(factory=dict)
    """State changes so far, by the state changed to."""


@attrs.define
class Attempt:
    """One call through a breaker, as a sync context manager around async code.

    Leaving the block cleanly records a success; leaving it with an exception
    that the breaker's ``is_failure`` accepts records a failure; cancellation
    and any other exception record nothing. :meth:`success` and :meth:`failure`
    record the outcome early (freeing a probe slot), after which the block's
    end no longer counts.
    """

    _breaker: CircuitBreaker
    generation: int = attrs.field(default=-1, init=False)
    """The breaker's generation when this call was admitted."""
    probe: bool = attrs.field(default=False, init=False)
    """Whether this call holds one of the half-open probe slots."""
    _entered: bool = attrs.field(default=False, init=False)
    _settled: bool = attrs.field(default=False, init=False)

    def __enter__(self) -> Attempt:
        if self._entered:
            raise RuntimeError("an Attempt can be entered only once")
        self._entered = True
        self._breaker._admit(self)
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _traceback: object) -> None:
        if exc is None:
            self._breaker._settle(self, "success")
        elif not _is_cancellation(exc) and self._breaker.is_failure(exc):
            self._breaker._settle(self, "failure")
        else:
            self._breaker._settle(self, None)

    def success(self) -> None:
        """Record success now (a stream's first token, say); later errors do not count."""
        self._breaker._settle(self, "success")

    def failure(self) -> None:
        """Record failure now; how the block ends afterwards does not count."""
        self._breaker._settle(self, "failure")


@attrs.define
class CircuitBreaker:
    """A breaker around one dependency; see the module docstring for its states.

    ``is_failure`` decides which exceptions count against the dependency;
    ``clock`` is ``trio.current_time`` except in tests that run without trio.
    Reading :attr:`state` (or anything else) performs a due open → half-open
    transition, so ``open`` past its timeout reads ``half_open``.
    """

    name: str
    settings: BreakerSettings
    is_failure: Callable[[BaseException], bool] = default_is_failure
    clock: Callable[[], float] = attrs.field(default=trio.current_time, kw_only=True)
    _state: BreakerState = attrs.field(default="closed", init=False)
    _generation: int = attrs.field(default=0, init=False)
    _consecutive_failures: int = attrs.field(default=0, init=False)
    _window: deque[tuple[float, bool]] = attrs.field(factory=deque, init=False)
    _window_failures: int = attrs.field(default=0, init=False)
    _opened_at: float | None = attrs.field(default=None, init=False)
    _half_open_at: float = attrs.field(default=0.0, init=False)
    _in_flight: int = attrs.field(default=0, init=False)
    _probe_successes: int = attrs.field(default=0, init=False)
    _total_failures: int = attrs.field(default=0, init=False)
    _total_successes: int = attrs.field(default=0, init=False)
    _rejections: int = attrs.field(default=0, init=False)
    _transitions: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``, as of now."""
        self._refresh(self.clock())
        return self._state

    @property
    def generation(self) -> int:
        """How many state changes there have been; each one starts a new generation."""
        self._refresh(self.clock())
        return self._generation

    def attempt(self) -> contextlib.AbstractContextManager[Attempt]:
        """A context manager for one call; entering it raises BreakerOpen if turned away."""
        return Attempt(self)

    def retry_after_ms(self) -> int:
        """How long until a call would be let through; 0 if it would be now."""
        return self._retry_after_ms(self.clock())

    def statistics(self) -> BreakerStatistics:
        """A snapshot of the state and counters."""
        now = self.clock()
        self._refresh(now)
        self._prune(now)
        return BreakerStatistics(
            name=self.name,
            state=self._state,
            generation=self._generation,
            consecutive_failures=self._consecutive_failures,
            window_calls=len(self._window),
            window_failures=self._window_failures,
            opened_at=self._opened_at,
            retry_after_ms=self._retry_after_ms(now),
            half_open_in_flight=self._in_flight,
            total_failures=self._total_failures,
            total_successes=self._total_successes,
            rejections=self._rejections,
            transitions=dict(self._transitions),
        )

    # The one subtle place: a result arriving after the state its call began
    # in is gone. A call admitted while closed may fail after others opened
    # the breaker (counted, it would restart the open timer) or after a probe
    # closed it again (counted, it would reopen it on evidence older than the
    # probe). So each transition starts a new generation, each Attempt keeps
    # the one it was admitted in, and results from older ones are dropped.
    # Cancellation is the caller giving up, not the dependency failing: it
    # records nothing but frees its probe slot, or a half-open breaker whose
    # probes were all cancelled would turn everyone away for good.

    def _admit(self, attempt: Attempt) -> None:
        now = self.clock()
        self._refresh(now)
        busy = self._state == "half_open" and self._in_flight >= self.settings.half_open_max_calls
        if self._state == "open" or busy:
            self._rejections += 1
            what = "half-open and its probes are busy" if busy else "open"
            raise BreakerOpen(
                f"{self.name} circuit breaker is {what}", retry_after_ms=self._retry_after_ms(now)
            )
        if self._state == "half_open":
            attempt.probe = True
            self._in_flight += 1
        attempt.generation = self._generation

    def _settle(self, attempt: Attempt, outcome: _Outcome) -> None:
        if attempt._settled:
            return
        attempt._settled = True
        if outcome == "success":
            self._total_successes += 1
        elif outcome == "failure":
            self._total_failures += 1
        if attempt.generation != self._generation:
            return
        if attempt.probe:
            self._in_flight -= 1
        if outcome is None:
            return
        now = self.clock()
        if self._state == "half_open":
            if outcome == "failure":
                self._transition("open", now, "a probe failed")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.settings.half_open_max_calls:
                self._transition("closed", now, f"probes succeeded: {self._probe_successes}")
            return
        failed = outcome == "failure"
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        if self.settings.failure_ratio is not None:
            self._window.append((now, failed))
            self._window_failures += int(failed)
            self._prune(now)
        if not failed:
            return
        if self._consecutive_failures >= self.settings.failure_threshold:
            self._transition("open", now, f"consecutive failures: {self._consecutive_failures}")
        elif self._ratio_reached():
            self._transition(
                "open",
                now,
                f"failed in the last {self.settings.window_s} s:"
                f" {self._window_failures} of {len(self._window)} calls",
            )

    def _ratio_reached(self) -> bool:
        ratio, calls = self.settings.failure_ratio, len(self._window)
        return (
            ratio is not None
            and calls >= self.settings.min_calls
            and self._window_failures / calls >= ratio
        )

    def _prune(self, now: float) -> None:
        # A call is in the window while it is younger than window_s.
        horizon = now - self.settings.window_s
        while self._window and self._window[0][0] <= horizon:
            _, failed = self._window.popleft()
            self._window_failures -= int(failed)

    def _retry_after_ms(self, now: float) -> int:
        self._refresh(now)
        if self._state == "open":
            return _ceil_ms(self._half_open_at - now)
        if self._state == "half_open" and self._in_flight >= self.settings.half_open_max_calls:
            return _ceil_ms(min(PROBE_RETRY_AFTER_S, self.settings.open_timeout_s))
        return 0

    def _refresh(self, now: float) -> None:
        if self._state == "open" and now >= self._half_open_at:
            self._transition("half_open", now, f"open for {self.settings.open_timeout_s} s")

    def _transition(self, to: BreakerState, now: float, reason: str) -> None:
        was = self._state
        self._state = to
        self._transitions[to] += 1
        self._generation += 1
        self._consecutive_failures = self._in_flight = self._probe_successes = 0
        self._window.clear()
        self._window_failures = 0
        if to == "open":
            self._opened_at = now
            self._half_open_at = now + self.settings.open_timeout_s
        elif to == "closed":
            self._opened_at = None
        emit = log.warning if to == "open" else log.info
        emit("breaker state", name=self.name, reason=reason, **{"from": was, "to": to})
