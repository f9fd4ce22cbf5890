"""Virtual users: each keeps one WebSocket connection and asks one chat at a time.

A user starts at its place in the ramp-up, then loops: think, pick a kind, send ``chat``, read
that request's events to its terminal one (cancelling or dropping the connection on the way if
the scenario says so), record what it saw. It stops at the run's deadline or request count.
The per-frame path is kept lean (one ``orjson.loads`` and :func:`loadgen.chat.note_event`, no
task per request): the load generator shares the machine's cores with chatd and the simulator.
"""

from __future__ import annotations

import collections
import itertools
import math
import random
import time
from collections.abc import Iterator

import attrs
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from chatd.trio_websocket_compat import close_stream
from loadgen.chat import cancel_frame, chat_frame, note_event
from loadgen.scenarios import Kind, Scenario

__all__ = ["Record", "RunState", "run_users"]

REQUEST_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


@attrs.define(slots=True)
class Record:
    """What one user saw of one request. Times are seconds; ``sent_s`` is from the run's start.

    ``terminal`` is ``done`` or ``error`` (the server's terminal event), ``dropped`` (we
    dropped the connection first), ``closed`` (the server closed it first) or
    ``client_timeout``; ``action`` is ``cancel`` or ``drop`` if one was carried out before it.
    ``tokens`` are the LLM's ``usage.completion_tokens`` (none for Path B), ``chars`` the
    answer's; ``abort_at`` is ``time.monotonic()`` just before the cancel or drop, the clock
    ``closewatch.py`` stamps too.
    """

    kind: str
    message: str
    user: int
    sent_s: float
    terminal: str = "client_timeout"
    action: str | None = None
    ttft_s: float | None = None
    duration_s: float | None = None
    finish_reason: str | None = None
    code: str | None = None
    path: str | None = None
    shared: bool = False
    cached: bool = False
    server_ttft_ms: float | None = None
    tokens: int = 0
    chars: int = 0
    token_frames: int = 0
    frames: int = 0
    abort_at: float | None = None


@attrs.define
class RunState:
    """Bounds, shared counters (read by the progress bar) and the records of one run.
    Unique messages are numbered from ``message_offset``: a later run on the same chatd starts
    past the earlier one's count, so no question is asked twice."""

    url: str
    scenario: Scenario
    users: int
    duration_s: float
    ramp_s: float
    think_s: float
    max_requests: int | None = None
    seed: int = 1
    message_offset: int = 0
    t0: float = 0.0
    records: list[Record] = attrs.field(factory=list)
    connected: int = 0
    sent: int = 0
    in_flight: int = 0
    tokens: int = 0
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    _numbers: dict[str, Iterator[int]] = attrs.field(
        factory=lambda: collections.defaultdict(itertools.count), init=False
    )

    def may_send(self) -> bool:
        """Whether the run's bounds still allow a new request."""
        if self.max_requests is not None and self.sent >= self.max_requests:
            return False
        return trio.current_time() < self.t0 + self.duration_s

    def next_message(self, kind: Kind) -> str:
        """The next unique message of ``kind``."""
        return kind.make(self.message_offset + next(self._numbers[kind.name]))


async def run_users(run: RunState) -> None:
    """Run every user to its end; the ramp and the duration count from ``run.t0``."""
    async with trio.open_nursery() as nursery:
        for index in range(run.users):
            nursery.start_soon(_user, run, index)


async def _user(run: RunState, index: int) -> None:
    rng = random.Random(run.seed * 1_000_003 + index)
    await trio.sleep_until(run.t0 + run.ramp_s * index / max(1, run.users))
    while run.may_send():
        # trio-websocket 0.12 can let a Cancelled out of open_websocket_url (a Ping answered
        # while our close is under way: python-trio/trio-websocket#184). In a nursery of its
        # own it ends this connection only, not every user, and the user reconnects.
        async with trio.open_nursery() as guard:
            guard.start_soon(_connection, run, rng, index)
        if guard.cancel_scope.cancelled_caught:
            run.errors["lost:trio-websocket"] += 1


async def _connection(run: RunState, rng: random.Random, index: int) -> None:
    """One connection of a user, asking until the run or the connection ends. Connecting and
    closing are bounded here too: when trio-websocket's own handshake or close times out it
    still waits for the server to close the socket (chatd's janitor: 600 s)."""
    connected = False
    with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT_S) as bound:
        try:
            async with open_websocket_url(
                run.url, connect_timeout=CONNECT_TIMEOUT_S + 5, disconnect_timeout=CLOSE_TIMEOUT_S
            ) as ws:
                bound.deadline, connected = math.inf, True
                run.connected += 1
                try:
                    await _session(run, ws, rng, index)
                finally:
                    run.connected -= 1
                    bound.deadline = trio.current_time() + CLOSE_TIMEOUT_S + 1
        except (HandshakeError, OSError, ConnectionClosed, trio.BrokenResourceError) as exc:
            # Refused or reset: a failure to connect; our own drop surfacing on close was
            # already recorded.
            if not isinstance(exc, ConnectionClosed | trio.BrokenResourceError):
                run.errors[f"connect:{type(exc).__name__}"] += 1
                await trio.sleep(1.0)
    if bound.cancelled_caught:
        run.errors["close:timeout" if connected else "connect:timeout"] += 1
        if not connected:
            await trio.sleep(1.0)


async def _session(run: RunState, ws: WebSocketConnection, rng: random.Random, user: int) -> None:
    """Ask on ``ws`` until the run ends or the connection goes (then the caller reconnects)."""
    wave_s = run.scenario.behaviour.wave_s
    for k in itertools.count():
        if wave_s is None:
            await trio.sleep(rng.uniform(0, 2 * run.think_s) if run.think_s else 0)
        if not run.may_send():
            return
        kind = run.scenario.pick(rng)
        if wave_s is not None:
            # Waves start at the ramp's end (every user connected), then every wave_s; a
            # user still answering at a wave's start skips it.
            first = run.t0 + run.ramp_s
            wave = max(0, math.ceil((trio.current_time() - first) / wave_s))
            await trio.sleep_until(first + wave * wave_s)
            if not run.may_send():
                return
            message = kind.make(wave)
        else:
            message = run.next_message(kind)
        record = Record(kind.name, message, user, trio.current_time() - run.t0)
        run.records.append(record)
        run.sent += 1
        run.in_flight += 1
        try:
            await _ask(run, ws, f"u{user}-{k}", record, run.scenario.abort(rng))
        finally:
            run.in_flight -= 1
        if record.terminal in ("done", "error"):
            run.tokens += record.tokens
            if record.terminal == "error":
                run.errors[record.code or "?"] += 1
        else:
            if record.terminal != "dropped":  # a drop is the scenario's, not an error
                run.errors[record.terminal] += 1
            return  # the connection is gone or suspect: reconnect


async def _ask(
    run: RunState,
    ws: WebSocketConnection,
    request_id: str,
    record: Record,
    abort: tuple[str, float] | None,
) -> None:
    """Send one chat and read its events into ``record`` until it ends."""
    started = time.perf_counter()
    cut_at = math.inf if abort is None else trio.current_time() + abort[1]
    try:
        await ws.send_message(chat_frame(request_id, record.message))
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while True:
                with trio.move_on_at(cut_at):
                    event = orjson.loads(await ws.get_message())
                    if event.get("id") == request_id and note_event(record, event, started):
                        record.duration_s = time.perf_counter() - started
                        _terminal(record, event)
                        return
                    continue
                # The abort's time came before the terminal event.
                assert abort is not None
                cut_at = math.inf
                record.action, record.abort_at = abort[0], time.monotonic()
                if abort[0] == "cancel":
                    await ws.send_message(cancel_frame(request_id))
                else:  # no close handshake, as a network failure would leave it
                    await close_stream(ws)
                    record.terminal = "dropped"
                    record.duration_s = time.perf_counter() - started
                    return
    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        record.terminal = "closed"
        record.duration_s = time.perf_counter() - started
    except BaseException:  # cancelled with the connection (see _user): the request is lost
        record.terminal = "closed"
        record.duration_s = time.perf_counter() - started
        run.errors["closed"] += 1
        raise


def _terminal(record: Record, event: dict[str, object]) -> None:
    record.terminal = str(event["type"])
    if record.terminal == "error":
        record.code = str(event.get("code"))
        return
    record.finish_reason = str(event.get("finish_reason"))
    record.path = str(event.get("path", record.path))
    record.shared = bool(event.get("shared"))
    record.cached = bool(event.get("cached"))
    if isinstance(usage := event.get("usage"), dict):
        record.tokens = int(usage.get("completion_tokens") or 0)
    timings = event.get("timings")
    if isinstance(timings, dict) and timings.get("ttft_ms") is not None:
        record.server_ttft_ms = float(timings["ttft_ms"])
