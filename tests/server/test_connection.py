"""A connection's outbox on trio's virtual clock: token merging, ordering, room."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
import trio

from chatd.pipeline.events import Accepted, Done, Event, Token
from chatd.server.outbox import Outbox, Output


@attrs.define
class Recorder:
    """A transport that records frames with the time the network took them.

    While ``blocked``, frames wait (``buffered`` counts their bytes) until
    :meth:`unblock`, as a client that stops reading would make them wait."""

    frames: list[tuple[float, dict[str, Any]]] = attrs.field(factory=list)
    blocked: bool = False
    _waiting: list[bytes] = attrs.field(factory=list)
    _unblocked: trio.Event = attrs.field(factory=trio.Event)

    @property
    def buffered(self) -> int:
        return sum(len(f) for f in self._waiting)

    def send_nowait(self, frame: bytes) -> None:
        if self.blocked or self._waiting:
            self._waiting.append(frame)
        else:
            self.frames.append((trio.current_time(), orjson.loads(frame)))

    async def drain(self) -> None:
        await self._unblocked.wait()
        now = trio.current_time()
        self.frames.extend((now, orjson.loads(f)) for f in self._waiting)
        self._waiting.clear()

    def unblock(self) -> None:
        self.blocked = False
        self._unblocked.set()

    def texts(self, request_id: str = "a") -> list[str]:
        return [f.get("text", f["type"]) for _t, f in self.frames if f["id"] == request_id]


def done(request_id: str) -> Done:
    return Done(request_id, "stop", "direct", False, False, {}, {})


async def run(
    events: list[tuple[float, str, Event]],
    window: float,
    transport: Recorder | None = None,
    unblock_at: float | None = None,
) -> Recorder:
    """Send ``(at, id, event)`` as the requests do, through their outputs, and
    return what reached the network."""
    transport = transport or Recorder()
    async with trio.open_nursery() as nursery:
        outbox = Outbox(transport, window, 1 << 20, nursery)  # type: ignore[arg-type]
        start = trio.current_time()
        if unblock_at is not None:

            async def unblock() -> None:
                await trio.sleep_until(start + unblock_at)
                transport.unblock()

            nursery.start_soon(unblock)
        for at, request_id, event in events:
            await trio.sleep_until(start + at)
            await Output(request_id, outbox).send(event)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return transport


async def test_first_token_at_once_then_merged_per_window(autojump_clock: trio.abc.Clock) -> None:
    """The first token goes out at once; the next ones within the window go out together."""
    sent = await run(
        [(0.0, "a", Token("one")), (0.005, "a", Token(" two")), (0.010, "a", Token(" three"))],
        window=0.020,
    )
    assert [(round(t, 3), f["text"]) for t, f in sent.frames] == [
        (0.0, "one"),
        (0.02, " two three"),
    ]


async def test_a_stream_slower_than_the_window_goes_out_token_by_token(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Tokens further apart than the window each go out at once, as they come."""
    sent = await run([(i * 0.2, "a", Token(f"{i}")) for i in range(4)], window=0.05)
    assert [(round(t, 3), f["text"]) for t, f in sent.frames] == [
        (0.0, "0"),
        (0.2, "1"),
        (0.4, "2"),
        (0.6, "3"),
    ]


async def test_window_zero_sends_each_token(autojump_clock: trio.abc.Clock) -> None:
    """With no window, tokens that arrive apart go out apart."""
    sent = await run([(0.0, "a", Token("one")), (0.005, "a", Token(" two"))], window=0.0)
    assert sent.texts() == ["one", " two"]


async def test_lagging_client_gets_merged_tokens(autojump_clock: trio.abc.Clock) -> None:
    """While the client does not read, an answer's tokens merge into one frame,
    sent once it reads again."""
    events: list[tuple[float, str, Event]] = [(i * 0.01, "a", Token(f"{i} ")) for i in range(10)]
    transport = Recorder()
    transport.send_nowait(orjson.dumps({"type": "pong", "id": "x"}))
    transport.blocked = True
    transport.send_nowait(orjson.dumps({"type": "pong", "id": "y"}))  # waits: buffered
    sent = await run(events, window=0.0, transport=transport, unblock_at=0.5)
    assert sent.texts() == ["".join(f"{i} " for i in range(10))]
    assert round(sent.frames[-1][0], 3) == 0.5


async def test_pending_tokens_flush_before_other_events(autojump_clock: trio.abc.Clock) -> None:
    """A request's waiting tokens always go out before its next event, per request."""
    sent = await run(
        [
            (0.0, "a", Accepted("r1")),
            (0.0, "a", Token("x")),
            (0.001, "a", Token("y")),
            (0.002, "b", Token("other")),
            (0.003, "a", done("r1")),
        ],
        window=0.5,
    )
    assert sent.texts("a") == ["accepted", "x", "y", "done"]
    assert [round(t, 3) for t, f in sent.frames if f["id"] == "a"] == [0.0, 0.0, 0.003, 0.003]
    assert sent.texts("b") == ["other"]


@pytest.mark.parametrize("window", [0.0, 0.02])
async def test_terminal_is_last(autojump_clock: trio.abc.Clock, window: float) -> None:
    """Nothing for a request follows its terminal event."""
    sent = await run(
        [(0.0, "a", Token("x")), (0.001, "a", Token("y")), (0.002, "a", done("r"))],
        window=window,
    )
    assert sent.frames[-1][1]["type"] == "done"
    assert sent.texts() == ["x", "y", "done"]


async def test_order_holds_while_the_client_lags(autojump_clock: trio.abc.Clock) -> None:
    """An event sent while the client lags goes after the tokens before it, and
    the tokens after it do not join the frame before it."""
    transport = Recorder(blocked=True)
    transport.send_nowait(b'{"type":"pong","id":"z"}')
    sent = await run(
        [
            (0.0, "a", Token("1")),
            (0.01, "a", Token("2")),
            (0.02, "a", Accepted("r")),
            (0.03, "a", Token("3")),
        ],
        window=0.0,
        transport=transport,
        unblock_at=0.1,
    )
    assert sent.texts() == ["12", "accepted", "3"]


async def test_a_request_waits_for_room_and_a_push_is_refused(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Past the outbox's limit a request's send waits until the client reads, and
    ``try_send`` (a flight's push) says no rather than wait."""
    transport = Recorder(blocked=True)
    transport.send_nowait(orjson.dumps({"type": "pong", "id": "z" * 200}))
    async with trio.open_nursery() as nursery:
        outbox = Outbox(transport, 0.0, 100, nursery)  # type: ignore[arg-type]
        out = Output("a", outbox)
        assert not out.try_send(Token("pushed"))
        with trio.move_on_after(1) as waiting:
            await out.send(Accepted("r"))
        assert waiting.cancelled_caught, "it waited for room"
        nursery.start_soon(out.send, Token("after"))
        await trio.sleep(1)
        transport.unblock()
        await trio.sleep(0.1)
        assert out.try_send(Token("now"))
        nursery.cancel_scope.cancel()
    assert transport.texts() == ["accepted", "after", "now"]
    assert transport.texts("z" * 200) == ["pong"]


async def test_a_connection_not_read_holds_a_bounded_backlog(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Twenty answers to a client that stopped reading: together they hold at
    most the connection's share of merged text (plus the token each sent
    before it found the outbox crowded), not twenty times an answer's share."""
    transport = Recorder(blocked=True)
    transport.send_nowait(orjson.dumps({"type": "pong", "id": "z"}))  # lagging, under the limit
    piece = "x" * 8192
    async with trio.open_nursery() as nursery:
        outbox = Outbox(transport, 0.0, 1 << 20, nursery)  # type: ignore[arg-type]

        async def answer(request_id: str) -> None:
            out = Output(request_id, outbox)
            for _ in range(100):
                await out.send(Token(piece))

        for index in range(20):
            nursery.start_soon(answer, f"r{index}")
        await trio.sleep(5)
        held = sum(outbox.pending_chars.values())
        assert held == outbox.pending_total
        assert held <= 128 * 1024 + 20 * len(piece)  # 20 answers at 64 Ki each: 1.4 M
        transport.unblock()
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert {len("".join(transport.texts(f"r{i}"))) for i in range(20)} == {100 * len(piece)}
