"""The janitor's deadlines on trio's virtual clock, at exact times."""

from __future__ import annotations

from typing import Any, get_args

import attrs
import pytest
import trio

from chatd.config import JanitorSettings, Settings
from chatd.observability.metrics import Metrics
from chatd.pipeline.registry import RequestRegistry, RequestState
from chatd.resilience.janitor import Janitor
from chatd.server.app import AppState
from chatd.server.connection import Connection
from chatd.server.serve import _drain

SETTINGS = JanitorSettings(
    interval_s=1,
    queued_s=3,
    preparing_s=2,
    routing_s=4,
    tools_s=5,
    streaming_s=6,
    stalled_client_s=7,
    idle_connection_s=8,
)


async def stuck_in(registry: RequestRegistry, state: RequestState, reaped_at: list[float]) -> None:
    with registry.track("r1") as tracked:
        tracked.enter(state)
        with tracked.scope:
            await trio.sleep(1000)
        reaped_at.append(trio.current_time())
        assert tracked.reaped is not None and state in tracked.reaped


@pytest.mark.parametrize(
    ("state", "deadline"),
    [("preparing", 2), ("queued", 3), ("routing", 4), ("tools", 5), ("streaming", 6)],
)
async def test_each_state_deadline(
    autojump_clock: trio.abc.Clock, state: RequestState, deadline: float
) -> None:
    """A request stuck in a state is reaped by the first sweep past that state's deadline."""
    registry = RequestRegistry(SETTINGS)
    janitor = Janitor(SETTINGS.interval_s, [registry.sweep])
    reaped_at: list[float] = []
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(janitor.run)
        await stuck_in(registry, state, reaped_at)
        nursery.cancel_scope.cancel()
    # sweeps run at 1, 2, 3...; "past the deadline" means strictly after it
    assert reaped_at == [pytest.approx(start + deadline + 1)]
    assert janitor.reaps[("request", f"stuck {state}")] == 1
    assert len(registry) == 0


async def test_moving_on_resets_the_clock(autojump_clock: trio.abc.Clock) -> None:
    """Entering a new state starts that state's deadline afresh."""
    registry = RequestRegistry(SETTINGS)
    janitor = Janitor(SETTINGS.interval_s, [registry.sweep])
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(janitor.run)
        with registry.track("r") as tracked, tracked.scope:
            tracked.enter("routing")
            await trio.sleep(3.5)
            tracked.enter("streaming")  # 6 s more from here
            await trio.sleep(1000)
        assert trio.current_time() == pytest.approx(start + 10)  # first sweep past 9.5
        nursery.cancel_scope.cancel()


@attrs.frozen
class _Pipeline:
    settings: Settings
    metrics: Metrics = attrs.field(factory=Metrics)


@attrs.define
class _Transport:
    """Hands over the given frames, then waits; with ``hang``, nothing it is
    sent ever leaves (a client that stopped reading)."""

    frames: list[str]
    hang: bool = False
    sent: list[str] = attrs.field(factory=list)
    last_received: float = 0.0
    _held: list[bytes] = attrs.field(factory=list)

    async def receive(self) -> str:
        if self.frames:
            return self.frames.pop(0)
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    def send_nowait(self, frame: bytes) -> None:
        if self.hang:
            self._held.append(frame)
        else:
            self.sent.append(frame.decode())

    @property
    def buffered(self) -> int:
        return sum(map(len, self._held))

    async def drain(self) -> None:
        if self._held:
            await trio.sleep_forever()

    def ping(self) -> None:
        self.last_received = trio.current_time()  # it answers at once

    async def close(self, code: int, reason: str) -> None:
        self.sent.append(f"close {code}")

    def aborted(self) -> None:
        self.sent.append("aborted")


async def serve_connection(transport: _Transport) -> tuple[float, str | None]:
    """Run one connection under a janitor; when it ended and why."""
    settings = Settings(janitor=SETTINGS)
    connection = Connection(_Pipeline(settings), "test")  # type: ignore[arg-type]
    state = AppState(pipeline=_Pipeline(settings), llm_url="", llm_simulated=True)  # type: ignore[arg-type]
    state.connections.add(connection)
    janitor = Janitor(SETTINGS.interval_s, [state.sweep_connections])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(janitor.run)
        await connection.serve(transport)
        nursery.cancel_scope.cancel()
    return trio.current_time(), connection.reaped


async def test_client_that_stops_reading_is_reaped(autojump_clock: trio.abc.Clock) -> None:
    """A send stuck for stalled_client_s gets the connection dropped."""
    start = trio.current_time()
    ended, reason = await serve_connection(_Transport(['{"type": "ping"}'], hang=True))
    assert reason == "client stopped reading"
    assert ended == pytest.approx(start + 8)  # stuck since 0, first sweep past 7


async def test_idle_connection_is_reaped(autojump_clock: trio.abc.Clock) -> None:
    """No frames and no requests for idle_connection_s closes the connection."""
    start = trio.current_time()
    transport = _Transport(['{"type": "ping", "id": "p"}'])
    ended, reason = await serve_connection(transport)
    assert reason == "idle"
    assert ended == pytest.approx(start + 9)
    assert transport.sent == ['{"type":"pong","id":"p"}']


@attrs.define
class _DrainPipeline:
    requests: RequestRegistry
    draining: bool = False

    def start_draining(self) -> None:
        self.draining = True


async def drain_with(durations: list[float], grace: float) -> tuple[float, list[str]]:
    """Requests that take ``durations``; a drain with ``grace``; when it ended, and how
    each request ended."""
    registry = RequestRegistry(SETTINGS)
    state = AppState(_DrainPipeline(registry), llm_url="", llm_simulated=True)  # type: ignore[arg-type]
    outcomes: list[str] = []

    async def request(name: str, seconds: float, task_status: Any) -> None:
        with registry.track(name) as tracked:
            task_status.started()
            with tracked.scope:
                await trio.sleep(seconds)
            outcomes.append(f"{name} {'cancelled' if tracked.scope.cancelled_caught else 'done'}")

    start = trio.current_time()
    stop_accepting = trio.Event()
    async with trio.open_nursery() as nursery:
        for i, seconds in enumerate(durations):
            await nursery.start(request, f"r{i}", seconds)
        await _drain(state, grace, stop_accepting)
        ended = trio.current_time() - start
    assert stop_accepting.is_set() and state.draining
    return ended, sorted(outcomes)


async def test_drain_waits_for_in_flight(autojump_clock: trio.abc.Clock) -> None:
    """A drain ends as soon as the last in-flight request finishes."""
    ended, outcomes = await drain_with([1.5, 3.0], grace=10)
    assert ended == pytest.approx(3.0)
    assert outcomes == ["r0 done", "r1 done"]


async def test_drain_cancels_at_the_grace(autojump_clock: trio.abc.Clock) -> None:
    """What is still running at the grace is cancelled then, exactly."""
    ended, outcomes = await drain_with([1.0, 30.0], grace=5)
    assert ended == pytest.approx(5.0)
    assert outcomes == ["r0 done", "r1 cancelled"]


async def test_drain_with_nothing_in_flight_is_immediate(autojump_clock: trio.abc.Clock) -> None:
    """With no requests in flight a drain returns at once."""
    ended, outcomes = await drain_with([], grace=5)
    assert ended == 0 and outcomes == []


def test_every_request_state_has_its_own_deadline() -> None:
    """Each state a request can be in is reaped after its own setting."""
    settings = JanitorSettings(queued_s=1, preparing_s=2, routing_s=3, tools_s=4, streaming_s=5)
    limits = [settings.stuck_after_s(state) for state in get_args(RequestState)]
    assert sorted(limits) == [1, 2, 3, 4, 5]
