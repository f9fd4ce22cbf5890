"""The client side of one WebSocket: :class:`FuzzSocket`, which sends any
frame (in one write or split) and reads and checks every event all the time."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from .ledger import Ledger, Mismatch, Tally, event_problem
from .replies import Frame

REPLY_WAIT_S = 5.0
"""How long a reply may take (answers take milliseconds) before the fuzz
says which is missing."""


_names = iter(range(1, 1 << 62))


@attrs.define(eq=False, repr=False)
class FuzzSocket:
    """A raw WebSocket client (wsproto over a trio socket): sends any frame,
    in one write or split, and reads every event all the time."""

    stream: trio.SocketStream
    ws: WSConnection
    name: str = attrs.field(factory=lambda: f"conn{next(_names)}")
    ledger: Ledger = attrs.field(factory=Ledger)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    got: Tally = attrs.field(factory=Tally)
    problems: list[str] = attrs.field(factory=list)
    gone: trio.Event = attrs.field(factory=trio.Event)
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    ended: Literal["open", "closing", "dropped"] = "open"
    _arrived: trio.Event = attrs.field(factory=trio.Event)
    _parts: list[str] = attrs.field(factory=list)

    def __repr__(self) -> str:
        return self.name

    @classmethod
    async def connect(cls, port: int, nursery: trio.Nursery) -> FuzzSocket:
        """Open ``/v1/ws`` on 127.0.0.1:``port``; its reader runs in ``nursery``."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        try:
            await stream.send_all(ws.send(Request(host="127.0.0.1", target="/v1/ws")))
            while True:
                data = await stream.receive_some(65536)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        sock = cls(stream, ws)
                        nursery.start_soon(sock._read)
                        return sock
                    if isinstance(event, RejectConnection):
                        raise Mismatch(f"handshake refused: {event}")
                if not data:
                    raise Mismatch("chatd closed during the handshake")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _read(self) -> None:
        try:
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            self._received("".join(self._parts))
                            self._parts.clear()
                    elif isinstance(event, BytesMessage):
                        self.problems.append(f"a binary message from chatd: {event.data!r}")
                    elif isinstance(event, Ping) and self.ws.state is ConnectionState.OPEN:
                        await self._send_raw(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if self.ended == "open":
                            self.problems.append(f"chatd closed the connection: {event}")
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send_raw(self.ws.send(event.response()))
                        return
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    if self.ended == "open":
                        self.problems.append("chatd dropped the connection")
                    return
                self.ws.receive_data(data)
        finally:
            self.gone.set()
            self._arrived.set()

    def _received(self, text: str) -> None:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.problems.append(f"chatd sent text that is not JSON: {text!r}")
            return
        problem = event_problem(event)
        if problem is not None:
            self.problems.append(problem)
            return
        self.events.append(event)
        self.got.add(event)
        self._arrived.set()
        self._arrived = trio.Event()

    async def _send_raw(self, data: bytes) -> None:
        async with self.lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(data)  # if it fails, the reader hears of it

    def encode(self, one: Frame) -> bytes:
        """``one`` as WebSocket frames (a ping between fragments)."""
        payload = one.payload
        if one.fragments == 1:
            kind = BytesMessage if isinstance(payload, bytes) else TextMessage
            return self.ws.send(kind(data=payload))  # type: ignore[operator]
        cuts = sorted({len(payload) * k // one.fragments for k in range(1, one.fragments)})
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        out = b""
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            kind = BytesMessage if isinstance(piece, bytes) else TextMessage
            out += self.ws.send(kind(data=piece, message_finished=last))  # type: ignore[operator]
            if not last:
                out += self.ws.send(Ping(b"between"))
        return out

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send ``frames`` in one write (a burst) and note what each must get."""
        if self.ended != "open":
            return
        for one in frames:
            self.ledger.add(one.reply)
        await self._send_raw(b"".join(self.encode(one) for one in frames))

    def outstanding(self) -> list[str]:
        """Ids that still owe a terminal event, as far as has arrived."""
        got = self.got.terminals
        return sorted(i for i, n in self.ledger.terminals.items() if got[i] < n)

    def check(self, *, owed: Literal["some", "replies", "all"]) -> None:
        """Raise :class:`Mismatch` if what has come breaks the ledger. ``some``:
        nothing came that was not owed; ``replies``: nor is any reply missing
        to a frame that is not a well-formed chat (chatd answers those as it
        reads them, so before it reads a close); ``all``: everything owed came."""
        got = self.got
        problems = self.problems + got.problems
        ledger, every = self.ledger, owed == "all"
        for request_id in sorted(set(ledger.terminals) | set(got.terminals)):
            want, have = ledger.terminals[request_id], got.terminals[request_id]
            if have > want or (every and have != want):
                problems.append(f"{request_id!r}: {have} terminal events, {want} expected")
            for code, count in ledger.codes.get(request_id, {}).items():
                if owed != "some" and got.codes[request_id][code] < count:
                    problems.append(f"{request_id!r}: fewer than {count} {code} errors")
        for label, want_c, have_c in (
            ("connection errors", ledger.connection_errors, got.connection_errors),
            ("pongs", ledger.pongs, got.pongs),
        ):
            if have_c - want_c or (owed != "some" and want_c - have_c):
                problems.append(f"{label}: got {dict(have_c)}, expected {dict(want_c)}")
        if every and got.runs:
            problems.append(f"runs never ended: {sorted(got.runs)}")
        if problems:
            shown = "\n  ".join(problems[:10])
            raise Mismatch(f"{self.name}: {shown}\n  last events: {self.events[-30:]}")

    def settled(self) -> bool:
        """Every reply owed has come."""
        got, ledger = self.got, self.ledger
        return (
            got.terminals == +ledger.terminals
            and got.connection_errors == +ledger.connection_errors
            and got.pongs == +ledger.pongs
        )

    async def settle(self) -> None:
        """Wait until every frame sent has had its reply, checking as they come."""
        with trio.move_on_after(REPLY_WAIT_S):  # then report what is missing
            while True:
                self.check(owed="some")
                if self.settled() or self.gone.is_set():
                    break
                await self._arrived.wait()
        self.check(owed="all")

    async def close(self) -> None:
        """The closing handshake: chatd answers once the connection's tasks are
        over, so every event it sent has arrived by then."""
        try:
            if self.ended == "open":
                self.ended = "closing"
                await self._send_raw(self.ws.send(CloseConnection(1000)))
                with trio.move_on_after(REPLY_WAIT_S):
                    await self.gone.wait()
                if not self.gone.is_set():
                    self.problems.append("chatd did not answer the close in time")
        finally:
            await trio.aclose_forcefully(self.stream)

    async def drop(self, how: str) -> None:
        """Go without a close handshake: a FIN, a reset, or half a frame then a FIN."""
        self.ended = "dropped"
        try:
            with trio.move_on_after(1):
                if how == "mid_frame":
                    chat = '{"type": "chat", "id": "gone", "message": "hi"}'
                    data = self.ws.send(TextMessage(chat))
                    await self._send_raw(data[: len(data) // 2])
                elif how == "reset":
                    self.stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
        finally:
            await trio.aclose_forcefully(self.stream)
