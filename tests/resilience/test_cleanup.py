"""Cleanup that must happen: it runs when cancelled, and gives up when stuck."""

from __future__ import annotations

import threading

import trio

from chatd.resilience.cleanup import close_in_thread


async def test_close_runs_even_when_its_owner_is_cancelled() -> None:
    """Cancelled before the close began, the close still happens."""
    closed = threading.Event()
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await close_in_thread("test", closed.set, within_s=5)
    assert closed.is_set()


async def test_a_stuck_close_is_left_behind_at_its_deadline() -> None:
    """A close that does not finish in time is abandoned to its thread."""
    release = threading.Event()
    with trio.fail_after(5):
        finished = await close_in_thread("test", lambda: release.wait(10), within_s=0.05)
    release.set()
    assert finished is False
