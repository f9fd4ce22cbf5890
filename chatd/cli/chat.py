"""``chatd chat``: a terminal chat client on chatd's WebSocket (protocol.md §1, §4).

Each line on stdin is one ``chat`` in one session, so the conversation has
memory; the answer streams to stdout, and notes on what happened (tools, path,
timings, errors) go to stderr, dim on a terminal. Ctrl-C stops the answer under
way; at the prompt it ends the program, as the end of input does.
:func:`converse` is the client without a terminal, for tests; :func:`run_chat`
wires it to stdin, stdout, stderr and SIGINT. Imports nothing of the server.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any, TextIO

import attrs
import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from chatd.trio_websocket_compat import close_stream

__all__ = ["DEFAULT_URL", "Printer", "add_chat_arguments", "converse", "run_chat"]

DEFAULT_URL = "ws://127.0.0.1:8080/v1/ws"
PROMPT = "you> "
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


@attrs.define
class Printer:
    """Where a conversation shows: answers on ``out``, notes on ``notes``.

    It remembers whether ``out`` is mid-line, so that a note or the end of an
    answer always starts a fresh line.
    """

    out: TextIO
    notes: TextIO
    dim: bool = False
    mid_line: bool = False

    def text(self, text: str) -> None:
        """A piece of the answer (or the prompt), shown at once."""
        self.out.write(text)
        self.out.flush()
        self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        """Finish the line ``out`` is on, if any."""
        if self.mid_line:
            self.text("\n")

    def note(self, text: str) -> None:
        """``  [text]`` on a line of its own."""
        self.end_line()
        line = f"  [{text}]"
        self.notes.write(f"\x1b[2m{line}\x1b[0m\n" if self.dim else f"{line}\n")
        self.notes.flush()

    def fail(self, text: str) -> None:
        """``chatd chat: text``: why the program stops."""
        self.end_line()
        self.notes.write(f"chatd chat: {text}\n")
        self.notes.flush()


def _duration(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _summary(done: Mapping[str, Any]) -> str:
    """``done: 42 tokens, first token 310 ms, total 1.2 s``, and what else is worth saying."""
    timings = done.get("timings") or {}
    parts = [f"{(done.get('usage') or {}).get('completion_tokens', 0)} tokens"]
    for key, name in (("ttft_ms", "first token"), ("total_ms", "total")):
        if timings.get(key) is not None:
            parts.append(f"{name} {_duration(timings[key])}")
    parts += [flag for flag in ("cached", "shared") if done.get(flag)]
    if done.get("finish_reason") == "length":
        parts.append("cut short at the length limit")
    return "done: " + ", ".join(parts)


def _note(event: Mapping[str, Any]) -> str | None:
    """The note an event earns, if any."""
    match event["type"]:
        case "queued":
            return f"queued: position {event['position']}"
        case "route":
            return f"path: {event['path']}"
        case "tool_start":
            return f"tool {event['tool']} {json.dumps(event['arguments'], ensure_ascii=False)}"
        case "tool_end" if event["ok"]:
            return f"tool {event['tool']} ok {event['duration_ms']} ms"
        case "tool_end":
            return f"tool {event['tool']} failed: {event.get('error') or 'no reason given'}"
        case "done" if event["finish_reason"] == "cancelled":
            return "cancelled"
        case "done":
            return _summary(event)
        case "error":
            retry = event.get("retry_after_ms")
            hint = f" (try again in {_duration(retry)})" if retry is not None else ""
            return f"error {event['code']}: {event['message']}{hint}"
    return None


def _connect_failure(exc: HandshakeError) -> str:
    """Why connecting failed, in the operating system's words where it has some."""
    if isinstance(exc, ConnectionRejected):
        return f"the server refused the WebSocket with HTTP {exc.status_code}"
    cause = exc.__cause__
    # trio tries every address and reports the failures as a group behind one
    # OSError; the first failure says the most ("Connection refused").
    while isinstance(cause, OSError) and isinstance(cause.__cause__, BaseExceptionGroup):
        cause = cause.__cause__.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        # trio's words repeat the address; the system's alone are clearer.
        return os.strerror(cause.errno) if cause.errno and cause.errno > 0 else cause.strerror
    return str(cause or exc) or type(exc).__name__


def _close_text(reason: CloseReason | None) -> str:
    """``lost the connection (1006 ABNORMAL_CLOSURE)``, or the server's own words."""
    if reason is None or reason.code == 1006:  # no closing handshake: it dropped
        return "lost the connection" + (f" ({reason.code} {reason.name})" if reason else "")
    said = f": {reason.reason}" if reason.reason else ""
    return f"the server closed the connection ({reason.code} {reason.name}{said})"


@attrs.define
class _Conversation:
    """One run of the client: its connection, the answer under way, how to stop."""

    printer: Printer
    session: str
    show_ids: bool = True
    _failed: bool = attrs.field(default=False, init=False)  # the last request did
    _ws: WebSocketConnection | None = attrs.field(default=None, init=False)
    _current: str | None = attrs.field(default=None, init=False)  # the answer under way
    _cancelling: bool = attrs.field(default=False, init=False)
    _answered: trio.Event = attrs.field(factory=trio.Event, init=False)
    _asked: int = attrs.field(default=0, init=False)
    _quit: bool = attrs.field(default=False, init=False)
    _lost: str | None = attrs.field(default=None, init=False)  # why the server went away
    # Quitting cancels the connecting scope while there is no connection yet,
    # else only the chatting scope inside it, so the closing handshake still runs.
    _connecting: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _chatting: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)

    async def run(self, url: str, lines: AsyncIterable[str], api_key: str | None) -> int:
        """Connect, ask each line in turn, close; returns the exit status."""
        headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else None
        # Our own deadline, not trio-websocket's connect_timeout: that one leaves
        # its reader waiting on a peer that accepted TCP but never answers.
        self._connecting.deadline = trio.current_time() + CONNECT_TIMEOUT_S
        try:
            with self._connecting:
                try:
                    async with open_websocket_url(
                        url, extra_headers=headers, disconnect_timeout=CLOSE_TIMEOUT_S
                    ) as self._ws:
                        self._connecting.deadline = math.inf
                        self.printer.note(f"connected to {url}, session {self.session}")
                        with self._chatting:
                            await self._chat(self._ws, lines)
                finally:
                    if self._ws is not None:
                        # trio-websocket 0.12 leaves the TCP stream open when the
                        # peer closed or dropped it first; closing it twice is harmless.
                        await close_stream(self._ws)
        except HandshakeError as exc:
            if self._ws is None:
                self.printer.fail(f"cannot connect to {url}: {_connect_failure(exc)}")
                return 1
            # Otherwise the closing handshake timed out, after the conversation ended.
        if self._ws is None and not self._quit:
            self.printer.fail(f"cannot connect to {url}: no answer within {CONNECT_TIMEOUT_S:g} s")
            return 1
        if self._lost is not None:
            self.printer.fail(self._lost)
            return 1
        self.printer.end_line()
        return 1 if self._failed else 0

    async def _chat(self, ws: WebSocketConnection, lines: AsyncIterable[str]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_frames, ws)
            async for line in lines:
                if message := line.strip():
                    await self._ask(message)
            nursery.cancel_scope.cancel()

    async def _ask(self, message: str) -> None:
        """Send one question and wait for its end; the reader shows the rest."""
        self._asked += 1
        self._current, self._cancelling = f"chat-{self._asked}", False
        self._answered = trio.Event()
        chat = {"type": "chat", "id": self._current, "message": message, "session": self.session}
        await self._send(chat)
        await self._answered.wait()

    async def _read_frames(self, ws: WebSocketConnection) -> None:
        """Show each event of the answer under way; stop everything if the server leaves."""
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed as exc:
                self._gone(exc.reason)
                return
            event = orjson.loads(frame)
            if event["type"] == "error" and event.get("code") == "unauthorized":
                # The connection itself is refused (the server closes it next).
                self._lost = f"the server refused the connection: {event.get('message')}"
                self._chatting.cancel()
                return
            # An error without an id answers a frame chatd could not read (one
            # over its size limit, say): ours, as only one is ever in flight.
            if self._current is None or event.get("id") not in (self._current, None):
                continue
            if event["type"] == "token":
                self.printer.text(event["text"])
            elif note := _note(event):
                if self.show_ids and event.get("request_id") and event["type"] != "accepted":
                    note += f" · {event['request_id']}"
                self.printer.note(note)
            if event["type"] in ("done", "error"):
                self._failed = event["type"] == "error"
                self._current = None
                self._answered.set()

    async def follow_interrupts(self, interrupts: AsyncIterable[object]) -> None:
        """Each item is a Ctrl-C: it cancels the answer under way; at the prompt,
        or again while that cancel is pending (a server not answering), it quits."""
        async for _ in interrupts:
            if self._current is not None and not self._cancelling:
                self._cancelling = True
                await self._send({"type": "cancel", "id": self._current})
            else:
                self._quit = True
                (self._connecting if self._ws is None else self._chatting).cancel()

    async def _send(self, frame: Mapping[str, Any]) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_message(orjson.dumps(frame).decode())
        except ConnectionClosed as exc:
            self._gone(exc.reason)

    def _gone(self, reason: CloseReason | None) -> None:
        if self._lost is None:
            self._lost = _close_text(reason)
        self._chatting.cancel()


async def converse(
    url: str,
    lines: AsyncIterable[str],
    printer: Printer,
    interrupts: AsyncIterable[object],
    *,
    session: str,
    api_key: str | None = None,
    show_ids: bool = True,
) -> int:
    """Hold one conversation with chatd at ``url``; returns the exit status.

    Each of ``lines`` is asked once the previous answer is done; each item of
    ``interrupts`` is one Ctrl-C. 0 when the lines end or the user quits, 1
    when chatd cannot be reached or goes away, or the last request failed
    (so a script can tell). With ``show_ids`` each answer's summary (or
    error) ends with its request id, for ``chatd trace``.
    """
    conversation = _Conversation(printer, session, show_ids)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conversation.follow_interrupts, interrupts)
        status = await conversation.run(url, lines, api_key)
        nursery.cancel_scope.cancel()
    return status


async def _stdin_lines(printer: Printer, prompt: str | None) -> AsyncGenerator[str, None]:
    """The lines on stdin, each asked for with ``prompt`` when there is one.

    ``os.read`` in a worker thread that a cancel abandons: trio cannot wait on
    a regular file (``chatd chat < questions.txt``), and an abandoned read
    inside ``sys.stdin`` would hold its buffer lock and abort the interpreter
    at exit.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending, eof = "", False
    while True:
        if prompt:
            printer.text(prompt)
        while "\n" not in pending and not eof:
            chunk = await trio.to_thread.run_sync(os.read, 0, 65536, abandon_on_cancel=True)
            eof = not chunk
            pending += decoder.decode(chunk, final=eof)
        if not pending:
            return
        line, newline, pending = pending.partition("\n")
        if newline:
            printer.mid_line = False  # the user's Enter ended the prompt's line
        yield line


async def _chat_on_terminal(url: str, session: str, api_key: str | None, ids: bool) -> int:
    printer = Printer(
        sys.stdout, sys.stderr, dim=sys.stderr.isatty() and "NO_COLOR" not in os.environ
    )
    prompt = PROMPT if sys.stdin.isatty() else None
    async with contextlib.aclosing(_stdin_lines(printer, prompt)) as lines:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            return await converse(
                url, lines, printer, interrupts, session=session, api_key=api_key, show_ids=ids
            )


def run_chat(args: argparse.Namespace) -> int:
    """Run ``chatd chat`` with the arguments :func:`add_chat_arguments` made."""
    # Unguessable (22+ characters, letters and digits): the session is this
    # terminal's alone, on any connection, with or without a key.
    session = args.session or f"cli-{secrets.token_hex(16)}"
    return trio.run(_chat_on_terminal, args.url, session, args.api_key, not args.no_ids)


def _websocket_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a ws:// or wss:// URL")
    return value


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``chatd chat``, added to its (sub)parser."""
    parser.add_argument(
        "--url", type=_websocket_url, default=DEFAULT_URL, help=f"default {DEFAULT_URL}"
    )
    parser.add_argument(
        "--session", help="conversation name; reuse one to go on with it (default: a new one)"
    )
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--no-ids", action="store_true", help="leave request ids out of the answers' summaries"
    )
