"""CPU over an interval: chatd's, the simulator's, this client's and the whole machine's.

The machine is shared: the load generator and the simulator take cores from
chatd, and so may anything else running, so a benchmark reads all of them
over the same interval (:class:`Usage`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Protocol

import attrs

__all__ = ["SPENT_KEYS", "Usage", "busy_shares", "machine_cpu_seconds", "machine_delta"]

SPENT_KEYS = (
    "wall_s",
    "chatd_cpu_s",
    "sim_cpu_s",
    "client_cpu_s",
    "machine_busy_s",
    "machine_stolen_s",
)
"""The keys of :meth:`Usage.stop`'s seconds (what :func:`busy_shares` takes)."""


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine, all cores, from /proc/stat:
    whether something else on the machine competed with the run."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick


def machine_delta(before: tuple[float, float]) -> tuple[float, float]:
    """:func:`machine_cpu_seconds` since ``before``."""
    busy, stolen = machine_cpu_seconds()
    return busy - before[0], stolen - before[1]


class HasCpu(Protocol):
    """A process whose CPU time can be read (:class:`loadgen.processes.Process` and the like)."""

    def cpu_seconds(self) -> float: ...


@attrs.define
class Usage:
    """CPU of chatd, the simulator, this client and the machine over an interval."""

    chatd: HasCpu
    sim: HasCpu
    chatd0: float = 0.0
    sim0: float = 0.0
    client0: float = 0.0
    wall0: float = 0.0
    machine0: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        """Read every clock: the interval starts now."""
        self.chatd0, self.sim0 = self.chatd.cpu_seconds(), self.sim.cpu_seconds()
        self.client0, self.wall0 = time.process_time(), time.perf_counter()
        self.machine0 = machine_cpu_seconds()

    def stop(self) -> dict[str, float]:
        """Seconds of each since :meth:`start`."""
        busy, stolen = machine_delta(self.machine0)
        return {
            "wall_s": time.perf_counter() - self.wall0,
            "chatd_cpu_s": self.chatd.cpu_seconds() - self.chatd0,
            "sim_cpu_s": self.sim.cpu_seconds() - self.sim0,
            "client_cpu_s": time.process_time() - self.client0,
            "machine_busy_s": busy,
            "machine_stolen_s": stolen,
        }


def busy_shares(spent: Mapping[str, float]) -> dict[str, float]:
    """:meth:`Usage.stop`'s seconds (or their sums) as shares of the wall time: chatd's, the
    simulator's and this client's CPU busy (3 places), the machine's cores busy and stolen
    (2 places)."""
    wall = max(spent["wall_s"], 1e-9)
    return {
        "chatd_cpu_busy": round(spent["chatd_cpu_s"] / wall, 3),
        "sim_cpu_busy": round(spent["sim_cpu_s"] / wall, 3),
        "client_cpu_busy": round(spent["client_cpu_s"] / wall, 3),
        "machine_cores_busy": round(spent["machine_busy_s"] / wall, 2),
        "machine_cores_stolen": round(spent["machine_stolen_s"] / wall, 2),
    }
