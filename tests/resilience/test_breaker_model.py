"""The breaker against a plain reference model, driven by hypothesis.

Rules begin attempts, finish them (success, failure, cancellation, a client
error, an early success), and move a fake clock; after every step the breaker
and the model must agree on state, counters and the advertised retry time.
The model has no generations and no lazy transitions: it stamps each attempt
with an epoch bumped by the transitions it makes itself, derives half-open
from the clock, and recomputes the ratio window from a list each time.
"""

from __future__ import annotations

import math

import attrs
import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chatd.config import BreakerSettings
from chatd.exceptions import BreakerOpen, ClientError, UpstreamError
from chatd.resilience import PROBE_RETRY_AFTER_S, Attempt, CircuitBreaker


def a_real_cancelled() -> BaseException:
    """A ``trio.Cancelled`` as trio raises it (its constructor is private)."""
    caught: list[BaseException] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.lowlevel.checkpoint()
            except BaseException as exc:
                caught.append(exc)
                raise

    trio.run(main)
    return caught[0]


def counts_against(exc: BaseException) -> bool:
    return not isinstance(exc, ClientError)


CANCELLED = a_real_cancelled()
FINISHES = ["success", "failure", "cancel", "client_error", "early_success_then_failure"]


@attrs.define
class Call:
    """One admitted attempt: the breaker's context manager and the model's view of it."""

    cm: Attempt
    epoch: int
    probe: bool


@attrs.define
class Model:
    """The breaker's rules written out as simply as possible."""

    s: BreakerSettings
    state: str = "closed"
    epoch: int = 0
    until: float = 0.0
    consecutive: int = 0
    window: list[tuple[float, bool]] = attrs.field(factory=list)
    in_flight: int = 0
    probe_successes: int = 0
    rejections: int = 0

    def observed(self, now: float) -> str:
        return "half_open" if self.state == "open" and now >= self.until else self.state

    def move(self, to: str, now: float) -> None:
        self.state, self.epoch = to, self.epoch + 1
        self.consecutive = self.in_flight = self.probe_successes = 0
        self.window = []
        self.until = now + self.s.open_timeout_s

    def live_window(self, now: float) -> list[tuple[float, bool]]:
        return [(t, f) for t, f in self.window if t > now - self.s.window_s]

    def retry_after_ms(self, now: float) -> int:
        state = self.observed(now)
        if state == "open":
            return max(1, math.ceil(round((self.until - now) * 1000, 6)))
        if state == "half_open" and self.in_flight >= self.s.half_open_max_calls:
            return math.ceil(min(PROBE_RETRY_AFTER_S, self.s.open_timeout_s) * 1000)
        return 0

    def begin(self, now: float) -> tuple[bool, bool]:
        """(admitted, probe) for a call beginning now."""
        if self.state == "open" and now >= self.until:
            self.state, self.epoch = "half_open", self.epoch + 1
        if self.state == "open" or (
            self.state == "half_open" and self.in_flight >= self.s.half_open_max_calls
        ):
            self.rejections += 1
            return False, False
        self.in_flight += self.state == "half_open"
        return True, self.state == "half_open"

    def finish(self, call: Call, outcome: str | None, now: float) -> None:
        if call.epoch != self.epoch:
            return
        self.in_flight -= call.probe
        if outcome is None:
            return
        failed = outcome == "failure"
        if self.state == "half_open":
            self.probe_successes += not failed
            if failed:
                self.move("open", now)
            elif self.probe_successes == self.s.half_open_max_calls:
                self.move("closed", now)
            return
        self.consecutive = self.consecutive + 1 if failed else 0
        if self.s.failure_ratio is not None:
            self.window = [*self.live_window(now), (now, failed)]
        fails = sum(f for _, f in self.window)
        ratio_reached = (
            self.s.failure_ratio is not None
            and len(self.window) >= self.s.min_calls
            and fails / len(self.window) >= self.s.failure_ratio
        )
        if failed and (self.consecutive >= self.s.failure_threshold or ratio_reached):
            self.move("open", now)


@settings(max_examples=300, stateful_step_count=40, deadline=None)
class BreakerMachine(RuleBasedStateMachine):
    """Random schedules of calls and clock moves, checked step by step."""

    now: float
    breaker: CircuitBreaker
    model: Model
    calls: list[Call]

    @initialize(
        threshold=st.integers(1, 4),
        open_timeout=st.sampled_from([1.0, 2.5, 4.0]),
        max_probes=st.integers(1, 3),
        ratio=st.sampled_from([None, 0.5, 1.0]),
        window=st.sampled_from([1.0, 3.0, 8.0]),
        min_calls=st.integers(1, 5),
    )
    def start(
        self,
        threshold: int,
        open_timeout: float,
        max_probes: int,
        ratio: float | None,
        window: float,
        min_calls: int,
    ) -> None:
        s = BreakerSettings(
            failure_threshold=threshold,
            open_timeout_s=open_timeout,
            half_open_max_calls=max_probes,
            failure_ratio=ratio,
            window_s=window,
            min_calls=min_calls,
        )
        self.now = 0.0
        # Everything but a client error is a failure here, so that cancellation
        # counting as neither rests on the breaker, not on default_is_failure.
        self.breaker = CircuitBreaker("model", s, counts_against, clock=lambda: self.now)
        self.model = Model(s)
        self.calls = []

    @rule()
    def begin(self) -> None:
        admitted, probe = self.model.begin(self.now)
        cm = self.breaker.attempt()
        assert isinstance(cm, Attempt)
        if not admitted:
            with pytest.raises(BreakerOpen), cm:
                pass
            return
        assert cm.__enter__() is cm
        assert cm.probe is probe
        self.calls.append(Call(cm, self.model.epoch, probe))

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data(), how=st.sampled_from(FINISHES))
    def finish(self, data: st.DataObject, how: str) -> None:
        call = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
        exc: BaseException | None = {
            "failure": UpstreamError("down"),
            "cancel": CANCELLED,
            "client_error": ClientError("bad"),
            "early_success_then_failure": UpstreamError("after the first token"),
        }.get(how)
        if how == "early_success_then_failure":
            call.cm.success()
        call.cm.__exit__(type(exc) if exc else None, exc, None)
        outcome = {"success": "success", "failure": "failure"}.get(how)
        if how == "early_success_then_failure":
            outcome = "success"
        self.model.finish(call, outcome, self.now)

    @rule(seconds=st.integers(0, 10).map(lambda n: n / 2))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        stats = self.breaker.statistics()
        assert stats.state == self.model.observed(self.now)
        assert stats.rejections == self.model.rejections
        assert stats.consecutive_failures == self.model.consecutive
        assert stats.half_open_in_flight == self.model.in_flight
        assert stats.window_calls == len(self.model.live_window(self.now))
        assert stats.retry_after_ms == self.model.retry_after_ms(self.now)
        assert 0 <= stats.half_open_in_flight <= self.model.s.half_open_max_calls


TestBreakerModel = BreakerMachine.TestCase
