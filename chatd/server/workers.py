"""``chatd serve --workers N``: several processes on one listening socket.

One process uses one core for Python work. With ``server.workers`` above 1
(``auto``: one per core), this process becomes a supervisor: it reserves the address (a socket bound
with SO_REUSEPORT that never listens, so port 0 becomes one real port),
starts the built-in simulated LLM if no LLM URL is configured (so every
worker talks to the same one), and runs N ``chatd serve`` workers, each
listening on that port with SO_REUSEPORT: the kernel spreads new connections
over them evenly, where one shared listening socket would hand most of them
to whichever worker wakes first. Workers share state
only through Redis (``redis.url``): without it each keeps its own cache,
sessions, rate limits and flights, which the supervisor warns about.

Signals: the workers run in their own process group, so a terminal's Ctrl-C
reaches only the supervisor, which passes SIGTERM on (each worker drains as a
single process would); a second signal is passed on too, and stops them at
once. A worker that dies unasked is started again after a pause.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence

import structlog
import trio

from chatd.config import Settings
from chatd.exceptions import ConfigError
from chatd.server.listen import WORKER_ENV, url_of

__all__ = ["supervise"]

log = structlog.get_logger("chatd.workers")

RESTART_PAUSE_S = 1.0


async def supervise(settings: Settings, worker_args: Sequence[str]) -> None:
    """Run ``settings.server.workers`` workers until a signal drains them.

    ``worker_args`` are the arguments after ``python -m chatd`` that start one
    worker with the same configuration (``serve --config ...``); the
    supervisor adds the host and port.
    """
    reserved = _reserve(settings)
    url = url_of(reserved)
    host, port = reserved.getsockname()[:2]
    worker_args = [*worker_args, "--host", host, "--port", str(port)]
    count = settings.server.worker_count
    log.info(
        "listening",
        url=url,
        ws_url=url.replace("http", "ws", 1) + "/v1/ws",
        workers=count,
    )
    if settings.redis.url is None:
        log.warning(
            "workers share no state without redis.url: each has its own cache, "
            "sessions, rate limits and flights",
            workers=count,
        )
    env = dict(os.environ)
    with reserved:
        async with trio.open_nursery() as nursery:
            if settings.llm.url is None:
                from chatd.llm.sim import serve_sim_llm

                sim = await nursery.start(serve_sim_llm, settings.sim)
                env["CHATD_LLM_URL"] = sim.base_url
                log.info("simulated LLM started in the supervisor", llm_url=sim.base_url)
            stopping = trio.Event()
            processes: list[trio.Process | None] = [None] * count
            async with trio.open_nursery() as workers:
                for index in range(count):
                    workers.start_soon(
                        _keep_running,
                        index,
                        [sys.executable, "-m", "chatd", *worker_args],
                        dict(env, **{WORKER_ENV: str(index + 1)}),
                        processes,
                        stopping,
                    )
                nursery.start_soon(_pass_signals, processes, stopping)
            nursery.cancel_scope.cancel()  # every worker has exited: stop the simulator
    log.info("stopped")


async def _keep_running(
    index: int,
    command: list[str],
    env: dict[str, str],
    processes: list[trio.Process | None],
    stopping: trio.Event,
) -> None:
    """Run worker ``index``, again whenever it dies before a signal asked it to."""
    while not stopping.is_set():
        process = await trio.lowlevel.open_process(command, env=env, start_new_session=True)
        processes[index] = process
        log.info("worker started", worker=index + 1, pid=process.pid)
        # Shielded: the supervisor waits for its workers; it never abandons one.
        with trio.CancelScope(shield=True):
            status = await process.wait()
        processes[index] = None
        if stopping.is_set():
            log.info("worker exited", worker=index + 1, pid=process.pid, status=status)
            return
        log.error("worker died; starting it again", worker=index + 1, status=status)
        await trio.sleep(RESTART_PAUSE_S)


async def _pass_signals(processes: list[trio.Process | None], stopping: trio.Event) -> None:
    """SIGINT or SIGTERM to the supervisor: SIGTERM to every worker, each time."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal: passing SIGTERM to the workers", signal=signal.Signals(signum).name)
            stopping.set()
            for process in processes:
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)


def _reserve(settings: Settings) -> socket.socket:
    """A bound, never listening SO_REUSEPORT socket holding the workers' address."""
    host, port = settings.server.host, settings.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"server: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock
