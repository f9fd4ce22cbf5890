"""The rig of one run: a simulator and a chatd as subprocesses, and what is read from them.

Processes start through ``bench_pipeline.start_process`` (a log file each, the
first JSON log line with a ``url``). chatd's CPU comes from /proc/PID/stat,
its RSS from VmRSS in /proc/PID/status; the simulator's counters and faults
through its ``/_sim/*`` endpoints. A sampler records a time series (CPU, RSS,
tokens, connections) once a second for the report and later plots; the
outage controller switches the simulator's fault on and off mid-run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from bench_pipeline import Process, clean_env, start_process

from loadgen.scenarios import Outage
from loadgen.users import RunState

__all__ = ["Rig", "rss_kib", "run_outage", "sample_forever", "start_rig"]


@attrs.frozen
class Rig:
    """The simulator and chatd of one run."""

    sim: Process
    chatd: Process

    @property
    def ws_url(self) -> str:
        return str(self.chatd.listening["ws_url"])

    @property
    def sim_control(self) -> str:
        """The simulator's base URL for ``/_sim/*``."""
        return str(self.sim.listening["url"]).removesuffix("/v1")


def start_rig(
    workdir: Path,
    chatd_path: Path,
    ttft_ms: float,
    tokens_per_s: float,
    chatd_env: Mapping[str, str],
    stack: contextlib.ExitStack,
) -> Rig:
    """Start ``chatd sim-llm`` and ``chatd serve`` against it; both die with ``stack``."""
    sim = start_process(
        "sim",
        ["sim-llm", "--port", "0", "--ttft-ms", f"{ttft_ms:g}", "--tokens-per-s",
         f"{tokens_per_s:g}"],
        workdir, clean_env(chatd_path), stack,
    )  # fmt: skip
    env = clean_env(
        chatd_path,
        CHATD_KB_PATH=str(workdir / "kb.sqlite3"),
        CHATD_LOG_FORMAT="json",
        **chatd_env,
    )
    chatd = start_process(
        "chatd", ["serve", "--port", "0", "--llm-url", sim.listening["url"]], workdir, env, stack
    )
    return Rig(sim, chatd)


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def sim_stats(http: httpx.AsyncClient) -> dict[str, int]:
    """The simulator's counters (``GET /_sim/stats``)."""
    response = await http.get("/_sim/stats")
    response.raise_for_status()
    return dict(response.json())


async def set_fault(http: httpx.AsyncClient, **fault: Any) -> None:
    (await http.post("/_sim/faults", json=fault)).raise_for_status()


async def sample_forever(
    rig: Rig, run: RunState, samples: list[dict[str, float]], every_s: float = 1.0
) -> None:
    """Append a sample of chatd's CPU and RSS and the run's counters every ``every_s``."""
    while True:
        samples.append(
            {
                "t_s": round(trio.current_time() - run.t0, 2),
                "chatd_cpu_s": round(rig.chatd.cpu_seconds(), 3),
                "chatd_rss_kib": rss_kib(rig.chatd.pid),
                "tokens": run.tokens,
                "sent": run.sent,
                "in_flight": run.in_flight,
                "connections": run.connected,
            }
        )
        await trio.sleep(every_s)


async def run_outage(
    http: httpx.AsyncClient, run: RunState, outage: Outage, marks: dict[str, float]
) -> None:
    """Answer every LLM call with ``outage.status`` between its start and end; the
    times it was switched on and off go into ``marks`` (seconds from the start)."""
    await trio.sleep_until(run.t0 + outage.start * run.duration_s)
    await set_fault(http, mode="error", status=outage.status)
    marks["fault_on_s"] = trio.current_time() - run.t0
    try:
        await trio.sleep_until(run.t0 + outage.end * run.duration_s)
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await set_fault(http, mode="ok")
            marks["fault_off_s"] = trio.current_time() - run.t0
