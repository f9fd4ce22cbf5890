"""Long-lived tasks behind one barrier: nothing dies silently, nothing takes
the process with it.

Tasks that live as long as the server (the janitor and its sweepers, the
admission queue's position updates, the flights' stream reader) run through
:meth:`Supervisor.run`; parts that live as long as a connection (its reader
and writer) report through :meth:`Supervisor.failed`. An exception in a
task is logged with the task's name and counted (``on_failure``, the
``chatd_task_failures_total{task}`` metric), and never reaches the nursery
that holds every connection. Then:

- a task whose restart is safe starts again after a pause, doubling from
  ``backoff_s`` up to ``max_backoff_s`` (and back to ``backoff_s`` once it
  has run ``window_s`` without failing);
- a task that may not restart, or that failed more than ``max_restarts``
  times within ``window_s``, is *fatal*: :attr:`Supervisor.fatal` is set,
  and the server drains and exits non-zero (:mod:`chatd.server.serve`).

Cancellation passes through untouched: the barrier catches ``Exception``,
never ``BaseException``.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

__all__ = ["Supervisor"]

log = structlog.get_logger("chatd.supervisor")


def _nothing(task: str) -> None:
    """The default ``on_failure``: the log line is all."""


@attrs.define(eq=False)
class Supervisor:
    """Runs long-lived tasks behind a barrier; see the module docstring."""

    on_failure: Callable[[str], None] = _nothing
    """Told the task's name at each failure (a metric)."""
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 60.0
    failures: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    fatal: trio.Event = attrs.field(factory=trio.Event, init=False)
    """Set when a task could not go on: the server must shut down."""
    fatal_task: str | None = attrs.field(default=None, init=False)

    def failed(self, task: str, error: BaseException) -> None:
        """Log and count one failure of ``task``."""
        log.error("task failed", task=task, exc_info=error)
        self.failures[task] += 1
        self.on_failure(task)

    async def run(
        self, task: str, work: Callable[..., Awaitable[Any]], *args: Any, restart: bool = True
    ) -> None:
        """Run ``work(*args)`` until it returns, restarting it after failures
        when ``restart`` (start this in the nursery that owns the task)."""
        backoff = self.backoff_s
        recent: collections.deque[float] = collections.deque()
        while True:
            started = trio.current_time()
            try:
                await work(*args)
                return
            except Exception as exc:
                self.failed(task, exc)
                del exc  # its traceback holds this frame
            now = trio.current_time()
            if now - started >= self.window_s:
                backoff = self.backoff_s  # it had been well for a while
            recent.append(now)
            while recent[0] < now - self.window_s:
                recent.popleft()
            if not restart or len(recent) > self.max_restarts:
                self._give_up(task)
                return
            log.warning("restarting task", task=task, after_s=backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _give_up(self, task: str) -> None:
        log.critical("task cannot go on: shutting down", task=task)
        if self.fatal_task is None:
            self.fatal_task = task
        self.fatal.set()
