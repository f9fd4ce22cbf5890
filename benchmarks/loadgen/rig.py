"""The rig of one run: a simulator and a chatd (or the bare relay) as subprocesses.

With ``watch_closes`` the server reaches the simulator through ``closewatch.py``, which notes
when each upstream connection closes. Also here: the simulator's counters and faults
(``/_sim/*``), a sampler of the server's CPU and RSS and the run's counters, and the outage
controller that switches the simulator's fault on and off mid-run.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import httpx
import trio

from loadgen.processes import (
    Process,
    clean_env,
    log_tails_on_failure,
    spawn_process,
    start_chatd,
    start_sim,
    wait_for_url,
)
from loadgen.scenarios import Outage
from loadgen.users import RunState

__all__ = [
    "Rig",
    "rig_running",
    "run_outage",
    "sample_forever",
    "set_fault",
    "sim_reset",
    "sim_stats",
]

BENCHMARKS = Path(__file__).resolve().parent.parent
Server = Literal["chatd", "relay"]


@attrs.frozen
class Rig:
    """The simulator, the server under load (chatd or ``benchmarks/relay.py``) and the close
    watcher, if any, of one run."""

    sim: Process
    server: Process
    closewatch: Process | None = None

    @property
    def ws_url(self) -> str:
        return str(self.server.listening["ws_url"])

    @property
    def server_url(self) -> str:
        """The server's base URL (chatd's ``/metrics`` is under it)."""
        return str(self.server.listening["url"])

    @property
    def sim_control(self) -> str:
        """The simulator's base URL for ``/_sim/*``."""
        return str(self.sim.listening["url"]).removesuffix("/v1")

    @property
    def processes(self) -> list[Process]:
        return [p for p in (self.sim, self.closewatch, self.server) if p is not None]


@contextlib.contextmanager
def rig_running(
    name: str,
    chatd_path: Path,
    ttft_ms: float,
    tokens_per_s: float,
    chatd_env: Mapping[str, str] | None = None,
    server: Server = "chatd",
    watch_closes: bool = False,
    sim_args: Sequence[str] = (),
) -> Iterator[Rig]:
    """``chatd sim-llm`` (with ``sim_args``) and ``chatd serve`` (or the relay) against it in
    a temporary directory for the block; their logs' tails on stderr if it fails, all killed
    after it."""
    with (
        tempfile.TemporaryDirectory(prefix=f"load-{name}-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir, env = Path(tmp), clean_env(chatd_path)
        sim = start_sim(workdir, chatd_path, ttft_ms, tokens_per_s, stack, extra=sim_args)
        llm_url, watcher = sim.listening["url"], None
        if watch_closes:
            target = ["--target", llm_url.removeprefix("http://").removesuffix("/v1")]
            script = BENCHMARKS / "loadgen" / "closewatch.py"
            watcher = wait_for_url(spawn_process("closewatch", target, workdir, env, stack, script))
            llm_url = watcher.listening["url"] + "/v1"
        if server == "relay":
            args = ["--port", "0", "--llm-url", llm_url]
            relay = BENCHMARKS / "relay.py"
            process = wait_for_url(spawn_process("relay", args, workdir, env, stack, relay))
        else:
            process = start_chatd("chatd", llm_url, workdir, chatd_path, stack, chatd_env or {})
        rig = Rig(sim, process, watcher)
        with log_tails_on_failure(rig.processes):
            yield rig


async def sim_stats(http: httpx.AsyncClient, sim_control: str = "") -> dict[str, int]:
    """The simulator's counters (``GET /_sim/stats``); ``sim_control`` is its base URL
    (:attr:`Rig.sim_control`) when ``http`` has none."""
    response = await http.get(sim_control + "/_sim/stats")
    response.raise_for_status()
    return dict(response.json())


async def sim_reset(http: httpx.AsyncClient, sim_control: str = "") -> None:
    """Zero the simulator's counters (``POST /_sim/reset``); ``sim_control`` as for
    :func:`sim_stats`."""
    (await http.post(sim_control + "/_sim/reset")).raise_for_status()


async def set_fault(http: httpx.AsyncClient, **fault: Any) -> None:
    (await http.post("/_sim/faults", json=fault)).raise_for_status()


async def sample_forever(
    rig: Rig, run: RunState, samples: list[dict[str, float]], every_s: float = 1.0
) -> None:
    """Append a sample of the server's CPU and RSS and the run's counters every ``every_s``."""
    while True:
        samples.append(
            {
                "t_s": round(trio.current_time() - run.t0, 2),
                "chatd_cpu_s": round(rig.server.cpu_seconds(), 3),
                "chatd_rss_kib": rig.server.rss_kib(),
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
