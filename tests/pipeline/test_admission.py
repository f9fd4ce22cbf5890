"""Admission on trio's virtual clock: slots, the bounded queue, its timeout, positions."""

from __future__ import annotations

import pytest
import trio

from chatd.config import LimitsSettings
from chatd.exceptions import Overloaded
from chatd.pipeline.admission import Admission


def admission(**limits: float) -> Admission:
    return Admission(LimitsSettings(**limits))  # type: ignore[arg-type]


async def hold(adm: Admission, seconds: float, positions: list[int] | None = None) -> float:
    record = positions.append if positions is not None else (lambda p: None)
    async with adm.slot(adm.llm_streams, record) as held:
        await trio.sleep(seconds)
    return held.waited


async def test_free_slot_is_immediate(autojump_clock: trio.abc.Clock) -> None:
    """With room, a slot is had at once and nobody is queued."""
    adm = admission(llm_streams=2)
    assert await hold(adm, 1) == 0.0
    assert adm.statistics().queued == 0


async def test_queue_full_refuses_at_once(autojump_clock: trio.abc.Clock) -> None:
    """With every slot taken and the queue full, the refusal is immediate."""
    adm = admission(llm_streams=1, max_queue=1, queue_timeout_s=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, adm, 5)
        nursery.start_soon(hold, adm, 5)
        await trio.sleep(0.1)
        with pytest.raises(Overloaded, match="queue is full") as info:
            await hold(adm, 1)
        assert trio.current_time() == pytest.approx(0.1)
        assert info.value.retry_after_ms == 10_000


async def test_queue_timeout_refuses_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    """A waiter is refused exactly queue_timeout_s after it joined, and leaves the queue."""
    adm = admission(llm_streams=1, max_queue=5, queue_timeout_s=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, adm, 10)
        await trio.sleep(1)
        with pytest.raises(Overloaded, match="no capacity within 2 s"):
            await hold(adm, 1)
        assert trio.current_time() == pytest.approx(3.0)
        assert adm.statistics().queued == 0
        nursery.cancel_scope.cancel()


async def test_waiter_served_in_order_with_wait_time(autojump_clock: trio.abc.Clock) -> None:
    """A queued waiter gets the slot when it frees and is told how long it waited."""
    adm = admission(llm_streams=1, max_queue=5, queue_timeout_s=10)
    positions: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, adm, 3)
        await trio.sleep(1)
        waited = await hold(adm, 0, positions)
    assert waited == pytest.approx(2.0)
    assert positions == [1]


async def test_positions_update_as_the_queue_moves(autojump_clock: trio.abc.Clock) -> None:
    """Position updates come from the one-a-second pass as waiters ahead leave."""
    adm = admission(llm_streams=1, max_queue=5, queue_timeout_s=100)
    third: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(adm.run_position_updates)
        nursery.start_soon(hold, adm, 10)  # holds the slot until t=10
        await trio.sleep(0.1)
        nursery.start_soon(hold, adm, 10)  # first in the queue, served at t=10
        await trio.sleep(0.1)
        nursery.start_soon(hold, adm, 0, third)  # second in the queue
        await trio.sleep(15)
        nursery.cancel_scope.cancel()
    assert third == [2, 1]


async def test_cancelled_waiter_leaves_no_trace(autojump_clock: trio.abc.Clock) -> None:
    """A waiter cancelled in the queue frees its place and takes no slot."""
    adm = admission(llm_streams=1, max_queue=5, queue_timeout_s=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, adm, 10)
        await trio.sleep(0.1)
        with trio.move_on_after(1):
            await hold(adm, 1)
        assert adm.statistics().queued == 0
        nursery.cancel_scope.cancel()
    assert adm.statistics().llm_streams_in_use == 0


async def test_cancelled_before_taking_a_free_slot_leaks_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A request already cancelled when it reaches a free slot takes none (no leak)."""
    adm = admission(llm_streams=1)
    for _ in range(5):
        with trio.CancelScope() as scope:
            scope.cancel()
            await hold(adm, 1)
    assert adm.statistics().llm_streams_in_use == 0
    assert await hold(adm, 0) == 0.0


async def test_released_early_slot_goes_to_the_next_waiter(autojump_clock: trio.abc.Clock) -> None:
    """A slot released inside its block goes to a waiter at once, and only once."""
    adm = admission(llm_streams=1)
    waited: list[float] = []

    async def wait_for_it() -> None:
        waited.append(await hold(adm, 1))

    async with (
        adm.slot(adm.llm_streams, lambda _position: None) as held,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(wait_for_it)
        await trio.sleep(2)
        held.release()
        held.release()
        await trio.sleep(0.5)
        assert waited == [] and adm.statistics().llm_streams_in_use == 1
    assert waited == [2.0]
    assert adm.statistics().llm_streams_in_use == 0


async def test_freed_slots_go_round_robin_over_clients(autojump_clock: trio.abc.Clock) -> None:
    """One client's burst does not push back another's request: freed slots go
    to each waiting client in turn."""
    adm = admission(llm_streams=1, max_queue=100)
    served: list[str] = []

    async def ask(name: str, client: str) -> None:
        async with adm.slot(adm.llm_streams, lambda _position: None, client):
            served.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for name in ["a1", "a2", "a3", "a4", "a5"]:
            nursery.start_soon(ask, name, "A")
            await trio.sleep(0.01)
        nursery.start_soon(ask, "b1", "B")
        await trio.sleep(0.01)
        nursery.start_soon(ask, "c1", "C")
    assert served == ["a1", "a2", "b1", "c1", "a3", "a4", "a5"]


async def test_a_full_queue_makes_room_for_a_new_client(autojump_clock: trio.abc.Clock) -> None:
    """A client new to a full queue takes the newest place of the client
    holding the most (refused, saying why); once shares are even, refusals
    are the newcomer's."""
    adm = admission(llm_streams=1, max_queue=3, queue_timeout_s=100)
    outcomes: dict[str, str] = {}

    async def ask(name: str, client: str) -> None:
        try:
            async with adm.slot(adm.llm_streams, lambda _position: None, client):
                outcomes[name] = "served"
                await trio.sleep(1)
        except Overloaded as exc:
            outcomes[name] = exc.message

    async with trio.open_nursery() as nursery:
        for name in ["a0", "a1", "a2", "a3"]:  # a0 holds the slot; a1..a3 fill the queue
            nursery.start_soon(ask, name, "A")
            await trio.sleep(0.01)
        for name, client in [("b1", "B"), ("c1", "C"), ("d1", "D")]:
            nursery.start_soon(ask, name, client)
            await trio.sleep(0.01)
    assert "holds the most" in outcomes["a3"] and "holds the most" in outcomes["a2"]
    assert "queue is full" in outcomes["d1"]
    assert [n for n in ["a0", "a1", "b1", "c1"] if outcomes[n] == "served"] == [
        "a0",
        "a1",
        "b1",
        "c1",
    ]


async def test_one_client_leaves_a_tenth_for_the_others(autojump_clock: trio.abc.Clock) -> None:
    """A client holds at most nine tenths of the slots: another's request is
    served at once, not after the next slot frees; a loopback client, which
    may be many users, may take them all."""
    adm = admission(llm_streams=10, max_queue=100, queue_timeout_s=100)
    waits: dict[str, float] = {}

    async def ask(name: str, client: str, seconds: float = 10) -> None:
        async with adm.slot(adm.llm_streams, lambda _position: None, client) as held:
            waits[name] = held.waited
            await trio.sleep(seconds)

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(ask, f"a{i}", "key:A")
        await trio.sleep(1)
        assert adm.statistics().llm_streams_in_use == 9  # a9..a11 wait
        nursery.start_soon(ask, "b", "key:B", 1)
        await trio.sleep(0.1)
        assert waits["b"] == 0.0
    a_waits = sorted(waits[f"a{i}"] for i in range(12))
    assert a_waits == [0.0] * 9 + [10.0] * 3  # A's last three waited for A's own

    local = admission(llm_streams=10, max_queue=100)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(hold_as, local, "addr:127.0.0.1")
        await trio.sleep(1)
        assert local.statistics().llm_streams_in_use == 10


async def hold_as(adm: Admission, client: str) -> None:
    async with adm.slot(adm.llm_streams, lambda _position: None, client):
        await trio.sleep(5)
