"""The connection's writer on trio's virtual clock: token merging and ordering."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
import trio

from chatd.observability.metrics import Metrics
from chatd.pipeline.events import Accepted, Done, Event, Token
from chatd.server.connection import Connection, _Merge, _Output


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
    """Send ``(at, id, event)`` as the requests do (through their outputs, so
    tokens may join a waiting frame directly) and return what the writer sent."""
    transport = Recorder(delay=delay)
    send, receive = trio.open_memory_channel[tuple[str | None, Event]](100)
    connection = Connection(pipeline=_Pipeline(), client="test")  # type: ignore[arg-type]
    outputs: dict[str, _Output] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection._write, receive, transport, window)
        start = trio.current_time()
        for at, request_id, event in events:
            await trio.sleep_until(start + at)
            if request_id not in outputs:
                outputs[request_id] = _Output(request_id, send.clone(), connection._merge)
            nursery.start_soon(outputs[request_id].send, event)
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


async def test_a_token_never_overtakes_its_requests_queued_event(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A token joins its answer's waiting frame directly only when nothing else of
    that request is still queued: here an event is queued behind a slow send, so
    the token after it waits its turn instead of joining the earlier frame."""
    sent = await run_writer(
        [
            (0.0, "a", Token("1")),  # out at once; the send takes 0.05
            (0.06, "a", Token("2")),  # waits for a's window (until 0.5)
            (0.07, "b", Token("x")),  # out at once: the writer is busy until 0.12
            (0.08, "a", Accepted("r")),  # queued behind b's send
            (0.09, "a", Token("3")),  # must not join "2" ahead of it
        ],
        window=0.5,
        delay=0.05,
    )
    frames_a = [f for _t, f in sent.frames if f["id"] == "a"]
    assert [f.get("text", f["type"]) for f in frames_a] == ["1", "2", "accepted", "3"]


@attrs.define
class CountingMerge(_Merge):
    """Counts the items the writer takes off the channel."""

    count: int = 0

    def taken(self, request_id: str | None) -> None:
        self.count += 1
        super().taken(request_id)


async def test_tokens_join_a_waiting_frame_without_waking_the_writer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Tokens of an answer whose frame waits for its window are merged at the
    source: the channel carries only the first of each frame."""
    transport = Recorder()
    send, receive = trio.open_memory_channel[tuple[str | None, Event]](100)
    connection = Connection(pipeline=_Pipeline(), client="test")  # type: ignore[arg-type]
    connection._merge = merge = CountingMerge()
    out = _Output("a", send, merge)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection._write, receive, transport, 0.05)
        for index in range(20):
            await out.send(Token(f"{index} "))
            await trio.sleep(0.01)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert "".join(f["text"] for _t, f in transport.frames) == "".join(f"{i} " for i in range(20))
    assert len(transport.frames) == 5  # the first at once, then one per 50 ms
    assert merge.count == len(transport.frames), "one channel item per frame, not per token"
