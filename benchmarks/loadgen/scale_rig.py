"""The scale scenario's rig: a ``chatd serve --workers N`` deployment (its supervisor and
workers, each worker known by pid and start time so that stopping it never hits a reused pid),
and the processes that are not chatd (the simulator, Redis) with the CPU clocks of all of
them and Redis's command counts."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

import attrs
import redis

from loadgen import processes
from loadgen.cpu import machine_cpu_seconds

__all__ = ["START_TIMEOUT_S", "Deployment", "Rig", "start_ticks"]

START_TIMEOUT_S = 30.0


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if it is gone: with
    the pid, this names one process even once pids are reused."""
    try:
        return int(processes.proc_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


@attrs.define
class Deployment:
    """One ``chatd serve --workers N``: its first process (the supervisor when N > 1) and
    its workers' start times (see :func:`start_ticks`) by pid."""

    label: str
    workers: int
    main: processes.Process
    worker_starts: dict[int, int | None] = attrs.field(factory=dict)

    @property
    def pids(self) -> list[int]:
        return [self.main.pid, *self.worker_starts]

    @property
    def ws_url(self) -> str:
        return str(self.main.listening["ws_url"])

    def cpu_seconds(self) -> float:
        return sum(processes.pid_cpu_seconds(pid) for pid in self.pids)

    def wait_ready(self) -> None:
        """Until every process has said ``using LLM`` (the supervisor's ``listening`` line
        comes before its workers even start), noting each worker as it starts."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            records = self.main.log_records()
            for pid in (int(r["pid"]) for r in records if r.get("event") == "worker started"):
                self.worker_starts.setdefault(pid, start_ticks(pid))
            if sum(r.get("event") == "using LLM" for r in records) == self.workers:
                return
            if self.main.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not get ready:\n{self.main.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the supervisor (it passes it on and waits for its workers, which run
        in sessions of their own), then SIGKILL to any worker still there: the same pid
        *and* start time, never a process that reused the pid."""
        if self.main.popen.poll() is None:
            self.main.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.main.popen.wait(15)
        for pid, started in self.worker_starts.items():
            if started is not None and start_ticks(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.main.kill()


@attrs.frozen
class Rig:
    """The processes that are not chatd (their CPU counts against the machine too), and
    a connection to Redis to read its command counts."""

    sim: processes.Process
    redis_pid: int
    redis: redis.Redis

    def clocks(self, chatd_pids: Sequence[int] = ()) -> dict[str, float]:
        """CPU seconds so far of each chatd process (``chatd 0`` the first), the rig's, this
        client's, and the whole machine's (busy, and stolen)."""
        cpu = {f"chatd {i}": processes.pid_cpu_seconds(pid) for i, pid in enumerate(chatd_pids)}
        cpu["sim"], cpu["redis"] = self.sim.cpu_seconds(), processes.pid_cpu_seconds(self.redis_pid)
        cpu["client"] = time.process_time()
        cpu["machine"], cpu["stolen"] = machine_cpu_seconds()
        return cpu

    def redis_commands(self) -> collections.Counter[str]:
        """Commands Redis has run since it started, by name (a pipeline's one by one)."""
        stats = self.redis.info("commandstats")
        counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        return collections.Counter(counts)
