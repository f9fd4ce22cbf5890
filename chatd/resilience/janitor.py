"""The janitor: one long-lived task that reaps what is stuck, stalled or stale.

Each part that holds something reapable offers a *sweeper*: a function that
reaps what is due and says what it reaped (requests past their state's
deadline, clients that stopped reading, idle connections, orphaned flights,
expired sessions and cache entries). The janitor calls every sweeper each
``interval_s`` seconds and logs every reap with its reason. A sweeper that
raises is reported to the :class:`~chatd.resilience.supervisor.Supervisor`
(logged and counted, as ``sweeper <name>``) and the others still run; the
janitor's own task runs under the supervisor too.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence
from typing import NoReturn

import attrs
import structlog
import trio

from chatd.resilience.supervisor import Supervisor

__all__ = ["Janitor", "Reap", "Sweeper", "sweeper_name"]

log = structlog.get_logger("chatd.janitor")


@attrs.frozen
class Reap:
    """One thing reaped: what kind, which one, and why."""

    kind: str
    id: str
    reason: str


Sweeper = Callable[[], Sequence[Reap]]
"""Reaps what is due now; returns what it reaped. Must not block."""


@attrs.define
class Janitor:
    """Calls its sweepers every ``interval_s`` seconds; counts reaps by reason."""

    interval_s: float
    sweepers: list[Sweeper] = attrs.field(factory=list)
    supervisor: Supervisor = attrs.field(factory=Supervisor)
    reaps: collections.Counter[tuple[str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )

    def sweep(self) -> list[Reap]:
        """One pass over every sweeper, logging each reap."""
        reaped: list[Reap] = []
        for sweeper in self.sweepers:
            try:
                reaps = sweeper()
            except Exception as exc:
                self.supervisor.failed(f"sweeper {sweeper_name(sweeper)}", exc)
                continue
            for reap in reaps:
                log.info("reaped", kind=reap.kind, id=reap.id, reason=reap.reason)
                self.reaps[reap.kind, reap.reason] += 1
                reaped.append(reap)
        return reaped

    async def run(self) -> NoReturn:
        """Sweep forever (run it in the server's nursery)."""
        while True:
            await trio.sleep(self.interval_s)
            self.sweep()


def sweeper_name(sweeper: Sweeper) -> str:
    """A sweeper's name for logs and metrics: ``Class.method`` for a bound
    method, a function's name, and for a partial its first argument too
    (``_expired(session)``)."""
    if isinstance(sweeper, functools.partial):
        first = f"({sweeper.args[0]})" if sweeper.args else ""
        return f"{sweeper_name(sweeper.func)}{first}"
    owner = getattr(sweeper, "__self__", None)
    name: str = getattr(sweeper, "__name__", type(sweeper).__name__)
    return name if owner is None else f"{type(owner).__name__}.{name}"
