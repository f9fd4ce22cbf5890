"""The connection's writer on trio's virtual clock: token merging and ordering."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
import trio

from chatd.observability.metrics import Metrics
from chatd.pipeline.events import Accepted, Done, Event, Token
from chatd.server.connection import Connection


@attrs.define
class Recorder:
    """A transport that records frames with their send time; can be made slow."""

    frames: list[tuple[float, dict[str, Any]]] = attrs.field(factory=list)
    delay: float = 0.0

    async def receive(self) -> str:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(self, frame: str) -> None:
        await trio.sleep(self.delay)
        self.frames.append((trio.current_time(), orjson.loads(frame)))


@attrs.frozen
class _Pipeline:
    """What the writer needs of a pipeline: somewhere to count frames."""

    metrics: Metrics = attrs.field(factory=Metrics)


def done(request_id: str) -> Done:
    return Done(request_id, "stop", "direct", False, False, {}, {})


async def run_writer(
    events: list[tuple[float, str, Event]], window: float, delay: float = 0.0
) -> Recorder:
    """Feed ``(at, id, event)`` to a writer and return what it sent."""
    transport = Recorder(delay=delay)
    send, receive = trio.open_memory_channel[tuple[str | None, Event]](100)
    connection = Connection(pipeline=_Pipeline(), client="test")  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection._write, receive, transport, window)
        start = trio.current_time()
        for at, request_id, event in events:
            await trio.sleep_until(start + at)
            await send.send((request_id, event))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return transport


async def test_first_token_at_once_then_merged_per_window(autojump_clock: trio.abc.Clock) -> None:
    """The first token goes out at once; the next ones within the window go out together."""
    sent = await run_writer(
        [(0.0, "a", Token("one")), (0.005, "a", Token(" two")), (0.010, "a", Token(" three"))],
        window=0.020,
    )
    assert [(round(t, 3), f["text"]) for t, f in sent.frames] == [
        (0.0, "one"),
        (0.02, " two three"),
    ]


async def test_window_zero_sends_each_token(autojump_clock: trio.abc.Clock) -> None:
    """With no window, tokens that arrive apart go out apart."""
    sent = await run_writer([(0.0, "a", Token("one")), (0.005, "a", Token(" two"))], window=0.0)
    assert [f["text"] for _t, f in sent.frames] == ["one", " two"]


async def test_lagging_client_gets_merged_tokens(autojump_clock: trio.abc.Clock) -> None:
    """While a send is slow, queued tokens are merged into one frame."""
    events: list[tuple[float, str, Event]] = [(i * 0.01, "a", Token(f"{i} ")) for i in range(10)]
    sent = await run_writer(events, window=0.0, delay=0.05)
    assert "".join(f["text"] for _t, f in sent.frames) == "".join(f"{i} " for i in range(10))
    assert len(sent.frames) < 10


async def test_pending_tokens_flush_before_other_events(autojump_clock: trio.abc.Clock) -> None:
    """A request's pending tokens always go out before its next event, per request."""
    sent = await run_writer(
        [
            (0.0, "a", Accepted("r1")),
            (0.0, "a", Token("x")),
            (0.001, "a", Token("y")),
            (0.002, "b", Token("other")),
            (0.003, "a", done("r1")),
        ],
        window=0.5,
    )
    frames_a = [f for _t, f in sent.frames if f["id"] == "a"]
    assert [f["type"] for f in frames_a] == ["accepted", "token", "token", "done"]
    assert [f.get("text") for f in frames_a[1:3]] == ["x", "y"]
    assert frames_a[-1]["request_id"] == "r1"
    assert [f["text"] for _t, f in sent.frames if f["id"] == "b"] == ["other"]


@pytest.mark.parametrize("window", [0.0, 0.02])
async def test_terminal_is_last(autojump_clock: trio.abc.Clock, window: float) -> None:
    """Nothing for a request follows its terminal event."""
    sent = await run_writer(
        [(0.0, "a", Token("x")), (0.001, "a", Token("y")), (0.002, "a", done("r"))],
        window=window,
    )
    assert sent.frames[-1][1]["type"] == "done"
