"""A request's life in the pipeline, driven directly (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import structlog.testing
import trio

from chatd.config import KBSettings, Settings
from chatd.exceptions import ShuttingDown
from chatd.pipeline import ChatInput, Event, Pipeline, chat
from chatd.pipeline.events import Done
from chatd.server.services import open_pipeline


@attrs.define
class Recorded:
    events: list[Event] = attrs.field(factory=list)

    async def send(self, event: Event) -> None:
        self.events.append(event)

    def send_nowait(self, event: Event) -> None:
        self.events.append(event)

    def try_send(self, event: Event) -> bool:
        self.events.append(event)
        return True


@attrs.define
class StuckRateLimiter:
    """A rate limiter whose store never answers (a Redis call hanging)."""

    entered: trio.Event = attrs.field(factory=trio.Event)
    left: bool = False
    tokens_per_day: int = 0

    async def check(self, client: str) -> None:
        self.entered.set()
        try:
            await trio.sleep_forever()
        finally:
            self.left = True

    async def charge(self, client: str, tokens: int) -> None:
        raise AssertionError("a cancelled check charges nothing")


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    settings = Settings(kb=KBSettings(path=str(tmp_path / "kb.sqlite3")))
    async with open_pipeline(settings, "http://127.0.0.1:9/v1") as pipeline:
        yield pipeline


async def test_cancel_stops_the_rate_limit_check(pipeline: Pipeline) -> None:
    """The rate-limit check runs in the request's scope: the client's cancel
    stops it, and the request ends cancelled, tracked no more."""
    limiter = StuckRateLimiter()
    pipeline = attrs.evolve(pipeline, rate_limiter=limiter)
    out, scope = Recorded(), trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run, ChatInput("c1", "hello"), out, scope)
            await limiter.entered.wait()
            assert len(pipeline.requests) == 1
            scope.cancel()
    assert limiter.left
    (terminal,) = out.events
    assert isinstance(terminal, Done) and terminal.finish_reason == "cancelled"
    assert len(pipeline.requests) == 0


async def test_what_the_block_raises_comes_out_as_raised(tmp_path: Path) -> None:
    """The pipeline's own nursery does not wrap the caller's error in a group."""
    settings = Settings(kb=KBSettings(path=str(tmp_path / "kb.sqlite3")))
    with pytest.raises(ShuttingDown, match="going away"):
        async with open_pipeline(settings, "http://127.0.0.1:9/v1") as pipeline:
            pipeline.start_draining()
            raise ShuttingDown("going away")


@attrs.define
class HangingCharge:
    """A rate limiter whose charge never returns (a Redis call hanging)."""

    tokens_per_day: int = 1000
    charges: list[int] = attrs.field(factory=list)

    async def check(self, client: str) -> None:
        pass

    async def charge(self, client: str, tokens: int) -> None:
        self.charges.append(tokens)
        await trio.sleep_forever()


async def test_a_charge_that_hangs_is_given_up_and_logged(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token charge is bounded: the answer ends (here the FAQ's, the LLM
    being down), and operators hear of the charge that did not happen. (On
    the real clock, with the bound made short: the knowledge base answers
    from worker threads, which an autojumping clock would jump past.)"""
    monkeypatch.setattr(chat, "CHARGE_TIMEOUT_S", 0.05)
    limiter = HangingCharge()
    pipeline = attrs.evolve(pipeline, rate_limiter=limiter)
    out = Recorded()
    with structlog.testing.capture_logs() as logs, trio.fail_after(30):
        await pipeline.run(ChatInput("c1", "How long does shipping take?"), out, trio.CancelScope())
    assert isinstance(out.events[-1], Done) and out.events[-1].path == "tool_stream"
    assert len(limiter.charges) == 1 and limiter.charges[0] > 0
    (warning,) = [e for e in logs if e["event"] == "token budget not charged"]
    assert warning["tokens"] == limiter.charges[0]
