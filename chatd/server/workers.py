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
reaches only the supervisor. On SIGINT or SIGTERM it sends each worker
SIGTERM (each drains as a single process would) and waits
``server.shutdown_grace_s`` plus ``server.worker_stop_margin_s``; a worker
still running then is killed (SIGKILL), and a second signal kills them at
once. The supervisor exits 0 only if every worker exited by itself with
status 0 (else :class:`~chatd.exceptions.ServerFailed`: status 1). A worker
that dies unasked is started again after a pause.

A worker starts with SIGTERM blocked; chatd's ``main()`` unblocks it once a
SIGTERM would end the worker cleanly (:mod:`chatd.cli.main`), so one asked to
stop while Python is still starting exits 0 instead of dying of the signal.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence

import attrs
import structlog
import trio

from chatd.config import Settings
from chatd.exceptions import ConfigError, ServerFailed
from chatd.server.listen import WORKER_ENV, url_of
from chatd.server.origins import warn_if_open

__all__ = ["supervise"]

log = structlog.get_logger("chatd.workers")

RESTART_PAUSE_S = 1.0
REAP_AFTER_KILL_S = 5.0
"""A bound on waiting for a killed worker to be gone (SIGKILL cannot be
ignored, but a process stuck in the kernel can outlast it)."""

# Runs in the child between fork and exec. Python warns that a preexec_fn can
# deadlock when the parent has threads (as trio's thread cache does): one that
# takes a lock another thread held at the fork would wait forever. This one is
# a single system call and takes none. Popen has no other way to set the mask.
_BLOCK_SIGTERM = functools.partial(signal.pthread_sigmask, signal.SIG_BLOCK, [signal.SIGTERM])


async def supervise(settings: Settings, worker_command: Sequence[str]) -> None:
    """Run ``settings.server.workers`` workers until a signal stops them.

    ``worker_command`` starts one worker with the same configuration
    (``python -m chatd serve --workers 1 --config ...``); the supervisor adds
    the host and port. Raises :class:`ServerFailed` when a worker had to be
    killed or exited non-zero once asked to stop.
    """
    # First of all: a signal from here on stops whichever workers have started.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        reserved = _reserve(settings)
        url = url_of(reserved)
        host, port = reserved.getsockname()[:2]
        count = settings.server.worker_count
        log.info(
            "listening",
            url=url,
            ws_url=url.replace("http", "ws", 1) + "/v1/ws",
            workers=count,
            startup=True,
        )
        warn_if_open(settings.server)
        if settings.redis.url is None:
            log.warning(
                "workers share no state without redis.url: each has its own cache, "
                "sessions, rate limits and flights",
                workers=count,
                startup=True,
            )
        env = dict(os.environ)
        with reserved:
            async with trio.open_nursery() as nursery:
                if settings.llm.url is None:
                    from chatd.llm.sim import serve_sim_llm

                    sim = await nursery.start(serve_sim_llm, settings.sim)
                    env["CHATD_LLM_URL"] = sim.base_url
                    log.info("simulated LLM started in the supervisor", llm_url=sim.base_url)
                workers = _Workers(
                    [*worker_command, "--host", host, "--port", str(port)],
                    env,
                    settings.server.shutdown_grace_s + settings.server.worker_stop_margin_s,
                )
                nursery.start_soon(workers.stop_on, signals)
                async with trio.open_nursery() as running:
                    for number in range(1, count + 1):
                        running.start_soon(workers.keep_running, number)
                # Every worker has exited: stop the simulator and the signal watch.
                nursery.cancel_scope.cancel()
        if workers.failures:
            log.error("stopped: not every worker exited cleanly", failures=workers.failures)
            raise ServerFailed("workers did not stop cleanly: " + ", ".join(workers.failures))
        log.info("stopped")


@attrs.define
class _Workers:
    """The worker processes: started, restarted, asked to stop, killed."""

    command: list[str]
    env: dict[str, str]
    stop_after_s: float
    """From SIGTERM to SIGKILL."""
    running: dict[int, trio.Process] = attrs.field(factory=dict, init=False)
    """By worker number, from 1."""
    stopping: trio.Event = attrs.field(factory=trio.Event, init=False)
    killing: bool = attrs.field(default=False, init=False)
    failures: list[str] = attrs.field(factory=list, init=False)
    """How the workers that did not exit by themselves with 0 ended."""

    async def keep_running(self, number: int) -> None:
        """Run worker ``number``, again whenever it dies before it was asked to stop."""
        env = dict(self.env, **{WORKER_ENV: str(number)})
        while not self.stopping.is_set():
            process = await trio.lowlevel.open_process(
                self.command, env=env, start_new_session=True, preexec_fn=_BLOCK_SIGTERM
            )
            self.running[number] = process
            log.info("worker started", worker=number, pid=process.pid)
            if self.stopping.is_set():  # asked while this one was being started
                self._stop(number, process)
            try:
                status = await process.wait()
            finally:
                del self.running[number]
                if process.returncode is None:  # the supervisor failed: take the worker along
                    process.kill()
                    with trio.move_on_after(REAP_AFTER_KILL_S) as reaping:
                        reaping.shield = True
                        await process.wait()
            if self.stopping.is_set():
                log.info("worker exited", worker=number, pid=process.pid, status=status)
                if status == -signal.SIGKILL:
                    self.failures.append(f"worker {number} killed")
                elif status != 0:
                    self.failures.append(f"worker {number} exited with status {status}")
                return
            log.error("worker died; starting it again", worker=number, status=status)
            with trio.move_on_after(RESTART_PAUSE_S):
                await self.stopping.wait()

    async def stop_on(self, signals: AsyncIterator[int]) -> None:
        """The first signal asks every worker to stop (SIGTERM); a second one,
        or ``stop_after_s`` passing, kills those still running (SIGKILL)."""
        signum = await anext(signals)
        log.info(
            "signal: asking the workers to stop",
            signal=signal.Signals(signum).name,
            kill_after_s=self.stop_after_s,
        )
        self.stopping.set()
        for number, process in self.running.items():
            self._stop(number, process)
        with trio.move_on_after(self.stop_after_s) as waiting:
            signum = await anext(signals)
            log.warning("second signal: killing the workers", signal=signal.Signals(signum).name)
        if waiting.cancelled_caught and self.running:
            log.error("workers still running past the grace", grace_s=self.stop_after_s)
        self.killing = True
        for number, process in self.running.items():
            self._stop(number, process)

    def _stop(self, number: int, process: trio.Process) -> None:
        """SIGTERM, or SIGKILL once the supervisor is killing."""
        if process.returncode is not None:
            return
        if self.killing:
            log.error("worker killed", worker=number, pid=process.pid)
            process.kill()
        else:
            process.terminate()


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
