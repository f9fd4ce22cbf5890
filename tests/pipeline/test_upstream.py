"""Retries, fallbacks and breakers around the LLM, on trio's virtual clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from chatd.config import BreakerSettings
from chatd.exceptions import BreakerOpen, UpstreamHTTPError, UpstreamUnavailable
from chatd.llm import ChatEvent, ChatRequest, Completion, TextDelta
from chatd.pipeline.upstream import Endpoint, Upstream, is_llm_failure
from chatd.resilience.breaker import CircuitBreaker

REQUEST = ChatRequest([{"role": "user", "content": "hi"}])


@attrs.define
class FakeLLM:
    """Fails its first ``failures`` calls (before any event), then answers."""

    model: str
    failures: int = 0
    error: Exception = attrs.field(factory=lambda: UpstreamUnavailable("refused"))
    calls: list[float] = attrs.field(factory=list)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[ChatEvent]]:
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.calls) <= self.failures:
            raise self.error

        async def events() -> AsyncIterator[ChatEvent]:
            yield TextDelta(self.model)
            yield Completion(self.model, (), "stop")

        yield events()


def upstream(*llms: FakeLLM, retries: int = 2, threshold: int = 5) -> Upstream:
    settings = BreakerSettings(failure_threshold=threshold, open_timeout_s=30)
    return Upstream(
        [
            Endpoint(llm, CircuitBreaker(llm.model, settings, is_failure=is_llm_failure))  # type: ignore[arg-type]
            for llm in llms
        ],
        retries=retries,
        backoff_s=1.0,
        rng=random.Random(7),
    )


async def answer(up: Upstream) -> str:
    async with up.stream(REQUEST) as events:
        return "".join([e.text async for e in events if isinstance(e, TextDelta)])


async def test_retries_with_backoff_then_answers(autojump_clock: trio.abc.Clock) -> None:
    """Two failures before the first event are retried after growing, jittered waits."""
    llm = FakeLLM("main", failures=2)
    start = trio.current_time()
    assert await answer(upstream(llm)) == "main"
    waits = [b - a for a, b in zip(llm.calls, llm.calls[1:], strict=False)]
    assert len(llm.calls) == 3
    assert 0.5 <= waits[0] <= 1.5 and 1.0 <= waits[1] <= 3.0
    assert llm.calls[0] == start


async def test_gives_up_after_retries(autojump_clock: trio.abc.Clock) -> None:
    """Past llm.retries the last error reaches the caller."""
    llm = FakeLLM("main", failures=10)
    with pytest.raises(UpstreamUnavailable, match="refused"):
        await answer(upstream(llm, retries=2))
    assert len(llm.calls) == 3


async def test_client_errors_are_not_retried(autojump_clock: trio.abc.Clock) -> None:
    """A 400 is our request's fault: no retry, and it does not count against the LLM."""
    llm = FakeLLM("main", failures=10, error=UpstreamHTTPError("bad", status=400, body=""))
    up = upstream(llm, threshold=1)
    with pytest.raises(UpstreamHTTPError):
        await answer(up)
    assert len(llm.calls) == 1
    assert up.endpoints[0].breaker.state == "closed"


async def test_open_breaker_fails_fast_without_calling(autojump_clock: trio.abc.Clock) -> None:
    """Once the breaker opens, calls fail at once with retry_after_ms, no retries."""
    llm = FakeLLM("main", failures=100)
    up = upstream(llm, retries=0, threshold=3)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await answer(up)
    before = trio.current_time()
    with pytest.raises(BreakerOpen) as info:
        await answer(up)
    assert trio.current_time() == before
    assert len(llm.calls) == 3
    assert info.value.retry_after_ms == 30_000


async def test_no_retry_while_the_breaker_is_open(autojump_clock: trio.abc.Clock) -> None:
    """A retry never goes to an endpoint whose breaker opened meanwhile."""
    llm = FakeLLM("main", failures=100)
    with pytest.raises(BreakerOpen):
        await answer(upstream(llm, retries=5, threshold=2))
    assert len(llm.calls) == 2


async def test_fallback_takes_over_when_primary_opens(autojump_clock: trio.abc.Clock) -> None:
    """With the primary's breaker open, the fallback answers, in the same request."""
    primary, fallback = FakeLLM("primary", failures=100), FakeLLM("fallback")
    up = upstream(primary, fallback, retries=3, threshold=2)
    assert await answer(up) == "fallback"
    assert len(primary.calls) == 2 and len(fallback.calls) == 1
    assert await answer(up) == "fallback"
    assert len(primary.calls) == 2, "the open primary is not called"


async def test_primary_back_after_open_timeout(autojump_clock: trio.abc.Clock) -> None:
    """After open_timeout_s a probe goes to the primary again and closes its breaker."""
    primary, fallback = FakeLLM("primary", failures=2), FakeLLM("fallback")
    up = upstream(primary, fallback, retries=3, threshold=2)
    assert await answer(up) == "fallback"
    await trio.sleep(30)
    assert await answer(up) == "primary"
    assert up.endpoints[0].breaker.state == "closed"
