"""The supervisor's barrier on trio's virtual clock: restarts with backoff,
giving up, and cancellation passing through."""

from __future__ import annotations

import pytest
import trio

from chatd.resilience.supervisor import Supervisor


class Flaky:
    """Fails its first ``failures`` runs, then runs until cancelled; notes when each began."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts: list[float] = []

    async def __call__(self) -> None:
        self.starts.append(trio.current_time())
        if len(self.starts) <= self.failures:
            raise RuntimeError(f"failure {len(self.starts)}")
        await trio.sleep_forever()


async def test_restarts_after_a_doubling_pause(autojump_clock: trio.abc.Clock) -> None:
    """Each failure is counted and the task restarts, 0.5 s, then 1 s, then 2 s later."""
    told: list[str] = []
    supervisor = Supervisor(told.append)
    work = Flaky(failures=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run, "flaky", work)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert work.starts == [0.0, 0.5, 1.5, 3.5]
    assert told == ["flaky"] * 3
    assert supervisor.failures["flaky"] == 3
    assert not supervisor.fatal.is_set()


async def test_gives_up_after_too_many_restarts(autojump_clock: trio.abc.Clock) -> None:
    """More than max_restarts failures within the window is fatal: run returns."""
    supervisor = Supervisor(max_restarts=2, window_s=60)
    work = Flaky(failures=100)
    with trio.fail_after(100):
        await supervisor.run("doomed", work)
    assert len(work.starts) == 3
    assert supervisor.fatal.is_set() and supervisor.fatal_task == "doomed"


async def test_backoff_resets_once_it_ran_well_for_a_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A task that fails after running well for a whole window restarts after the
    first pause again, and old failures no longer count towards giving up."""
    supervisor = Supervisor(max_restarts=1, window_s=10)
    starts: list[float] = []

    async def fails_late() -> None:
        starts.append(trio.current_time())
        if len(starts) == 1:
            raise RuntimeError("early")
        if len(starts) <= 4:
            await trio.sleep(20)
            raise RuntimeError("late")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run, "late", fails_late)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert starts == [0.0, 0.5, 21.0, 41.5, 62.0]
    assert not supervisor.fatal.is_set()


async def test_no_restart_is_fatal_at_once(autojump_clock: trio.abc.Clock) -> None:
    """A task that may not restart is fatal at its first failure."""
    supervisor = Supervisor()
    await supervisor.run("once", Flaky(failures=1), restart=False)
    assert supervisor.fatal_task == "once"


async def test_cancellation_is_not_a_failure(autojump_clock: trio.abc.Clock) -> None:
    """Cancelling the task's owner cancels it; nothing is counted or restarted."""
    supervisor = Supervisor()
    work = Flaky(failures=0)
    with trio.move_on_after(5):
        await supervisor.run("calm", work)
    assert work.starts == [0.0]
    assert supervisor.failures["calm"] == 0


async def test_a_normal_return_ends_it(autojump_clock: trio.abc.Clock) -> None:
    """A task that returns is done: not restarted, not fatal."""
    supervisor = Supervisor()
    calls: list[int] = []

    async def once() -> None:
        calls.append(1)

    await supervisor.run("once", once)
    assert calls == [1] and not supervisor.fatal.is_set()


@pytest.mark.parametrize("restart", [True, False])
async def test_failures_are_logged_with_the_task_name(
    autojump_clock: trio.abc.Clock, restart: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log line names the task and carries the exception."""
    supervisor = Supervisor(max_restarts=0)
    await supervisor.run("named", Flaky(failures=1), restart=restart)
    out = capsys.readouterr().out
    assert "task failed" in out and "named" in out and "failure 1" in out


def test_sweeper_names() -> None:
    """Sweepers are named by class and method, function, or partial's first argument."""
    import functools

    from chatd.config import JanitorSettings
    from chatd.pipeline.registry import RequestRegistry
    from chatd.resilience.janitor import sweeper_name

    def _expired(kind: str) -> list[object]:
        return []

    assert sweeper_name(RequestRegistry(JanitorSettings()).sweep) == "RequestRegistry.sweep"
    assert sweeper_name(functools.partial(_expired, "session")) == "_expired(session)"
    assert sweeper_name(_expired) == "_expired"
