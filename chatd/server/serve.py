"""Running chatd: one nursery for the process's lifetime.

``serve()`` starts the built-in simulated LLM when no LLM URL is configured,
then the front door (:mod:`chatd.server.front`: WebSockets served by chatd,
other HTTP by hypercorn and the quart app), and drains on SIGINT or SIGTERM:
``/readyz`` turns 503, in-flight requests get ``server.shutdown_grace_s``,
then the listener closes and connections end as they fall idle; a second
signal exits at once. Long-lived tasks run behind one
:class:`~chatd.resilience.supervisor.Supervisor`: a failure is logged,
counted and the task restarted; one that cannot go on drains the server,
which then raises :class:`~chatd.exceptions.ServerFailed` (exit status 1).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import resource
import signal
import socket
from collections.abc import Callable, Sequence
from typing import NoReturn

import attrs
import structlog
import trio
from hypercorn.config import Config as HypercornConfig

from chatd.config import Settings
from chatd.exceptions import ServerFailed
from chatd.llm.sim import serve_sim_llm
from chatd.observability.metrics import Metrics
from chatd.pipeline import Pipeline
from chatd.redaction import add_secrets
from chatd.resilience.janitor import Janitor, Reap, Sweeper
from chatd.resilience.supervisor import Supervisor
from chatd.server.app import WS_PATH, AppState, create_app, serve_websocket
from chatd.server.front import serve_front_door
from chatd.server.heap import PeriodicCollection, freeze_the_heap
from chatd.server.http_chat import with_sse_chat
from chatd.server.hypercorn_compat import open_http_server
from chatd.server.listen import WORKER_ENV, listen
from chatd.server.openai_api import with_openai_api
from chatd.server.origins import ASGIApp, guard_http, warn_if_open
from chatd.server.readiness import check_llm_at_start
from chatd.server.services import open_pipeline
from chatd.stores.cache import Expiring
from chatd.tools.base import Tool

__all__ = ["Running", "serve"]

log = structlog.get_logger("chatd.server")


@attrs.frozen
class Running:
    """What ``nursery.start(serve, ...)`` hands back: where chatd listens, and
    ``drain()``, which does what SIGTERM does."""

    url: str
    llm_url: str
    state: AppState
    drain: Callable[[], None]


def _secrets(settings: Settings) -> list[str | None]:
    """Every configured value that logs and errors must never show: keys,
    passwords, URLs with credentials, header values sent to the LLM and tools."""
    llm, kb = settings.llm, settings.kb
    headers = [llm.extra_headers, *(tool.headers for tool in settings.tools.http)]
    return [
        llm.api_key,
        *(f.api_key for f in llm.fallbacks),
        *settings.server.api_keys,
        *settings.server.operator_keys,
        settings.redis.url,
        kb.arango_url,
        kb.arango_password,
        *(v for h in headers for k, v in h.items() if _SECRET_HEADER.search(k)),
    ]


_SECRET_HEADER = re.compile("auth|key|token|secret|cookie|password", re.IGNORECASE)


def _raise_open_files_limit() -> None:
    """Every connection is a descriptor, and every LLM stream another: take
    the hard limit on open files as the soft one (as Go's runtime does), or
    the common soft default of 1,024 caps chatd at a few hundred chats."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):  # some systems cap it below the hard limit
            log.warning("cannot raise the limit on open files", soft=soft, hard=hard)


def _hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    # Our own drain cancels what is left at the grace; hypercorn's is the backstop.
    config.graceful_timeout = settings.server.shutdown_grace_s + 5
    config.websocket_ping_interval = None  # hypercorn serves no WebSocket: chatd does
    config.accesslog = None
    quiet = logging.getLogger("chatd.hypercorn")
    quiet.setLevel(logging.WARNING)
    config.errorlog = quiet
    return config


async def serve(
    settings: Settings,
    *,
    handle_signals: bool = True,
    extra_tools: Sequence[Tool] = (),
    own_process: bool = False,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run chatd until drained by a signal (or cancelled). ``own_process``
    (``chatd serve``): the process is chatd's alone, so it may set what is the
    whole process's, such as the garbage collector (:mod:`chatd.server.heap`)."""
    add_secrets(_secrets(settings))
    url, listener = listen(settings)
    worker = os.environ.get(WORKER_ENV)
    if worker:
        structlog.contextvars.bind_contextvars(worker=int(worker))
        log.info("worker serving", url=url, pid=os.getpid())
    else:
        log.info("listening", url=url, ws_url=url.replace("http", "ws", 1) + "/v1/ws", startup=True)
        warn_if_open(settings.server)
    _raise_open_files_limit()
    config = _hypercorn_config(settings)
    metrics = Metrics()
    supervisor = Supervisor(metrics.task_failed)
    with listener:
        await _serve_all(
            settings,
            url,
            listener,
            config,
            metrics,
            supervisor,
            handle_signals,
            extra_tools,
            own_process,
            task_status,
        )
    if supervisor.fatal_task is not None:
        log.error("stopped after a task failed", task=supervisor.fatal_task)
        raise ServerFailed(f"the {supervisor.fatal_task} task failed and could not go on")
    log.info("stopped")


async def _serve_all(
    settings: Settings,
    url: str,
    listener: socket.socket,
    config: HypercornConfig,
    metrics: Metrics,
    supervisor: Supervisor,
    handle_signals: bool,
    extra_tools: Sequence[Tool],
    own_process: bool,
    task_status: trio.TaskStatus[Running],
) -> None:
    drain, stopped = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        llm_url = settings.llm.url
        if llm_url is None:
            sim = await nursery.start(serve_sim_llm, settings.sim)
            llm_url = sim.base_url
        pipeline = await nursery.start(
            _run_pipeline, settings, llm_url, extra_tools, metrics, supervisor
        )
        state = AppState(
            pipeline,
            llm_url=llm_url,
            llm_simulated=settings.llm.url is None,
            supervisor=supervisor,
        )
        await nursery.start(_serve_connections, state, listener, config, drain, stopped)
        nursery.start_soon(_check_llm, pipeline, settings)
        if settings.llm.url is None:
            log.info("simulated LLM started in-process", llm_url=llm_url, startup=True)
        else:
            log.info("using LLM", llm_url=llm_url, model=settings.llm.model, startup=True)
        janitor = Janitor(
            settings.janitor.interval_s,
            [pipeline.requests.sweep, state.sweep_connections, *_store_sweepers(pipeline)],
            supervisor,
        )
        nursery.start_soon(supervisor.run, "janitor", janitor.run)
        pipeline.metrics.bind(
            admission=pipeline.admission,
            breakers=pipeline.breakers,
            flights=pipeline.flights,
            cache=pipeline.cache,
            janitor=janitor,
            requests=pipeline.requests,
            connections=state.connections,
        )

        def start_drain() -> None:
            if not state.draining:
                nursery.start_soon(_drain, state, settings.server.shutdown_grace_s, drain)

        nursery.start_soon(_drain_when_fatal, supervisor, start_drain)
        if handle_signals:
            nursery.start_soon(_watch_signals, start_drain, nursery.cancel_scope)
        if own_process:
            freeze_the_heap()
            janitor.sweepers.append(PeriodicCollection(settings.janitor.gc_interval_s).sweep)
        task_status.started(Running(url, llm_url, state, start_drain))
        # The connections end once a drain's in-flight work is done or its grace is up.
        await stopped.wait()
        nursery.cancel_scope.cancel()


async def _run_pipeline(
    settings: Settings,
    llm_url: str,
    extra_tools: Sequence[Tool],
    metrics: Metrics,
    supervisor: Supervisor,
    *,
    task_status: trio.TaskStatus[Pipeline],
) -> NoReturn:
    """Own the pipeline, and its long-lived tasks, for the process's life."""
    async with open_pipeline(settings, llm_url, extra_tools, metrics, supervisor) as pipeline:
        task_status.started(pipeline)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _serve_connections(
    state: AppState,
    listener: socket.socket,
    config: HypercornConfig,
    stop_accepting: trio.Event,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept until told to stop, then let every connection end: WebSockets
    close (1001) as they fall idle, idle HTTP keep-alive connections close, and
    whatever is left after hypercorn's graceful timeout is cancelled."""
    try:
        async with (
            open_http_server(_http_app(state), config) as (serve_http, close_idle),
            trio.open_nursery() as handlers,
        ):
            async with trio.open_nursery() as door:
                await door.start(
                    functools.partial(
                        serve_front_door,
                        listener,
                        websocket_path=WS_PATH,
                        serve_websocket=functools.partial(serve_websocket, state),
                        serve_http=serve_http,
                        handlers=handlers,
                        on_failure=state.supervisor.failed,
                    )
                )
                task_status.started()
                await stop_accepting.wait()
                door.cancel_scope.cancel()
            close_idle.set()
            handlers.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        stopped.set()


def _http_app(state: AppState) -> ASGIApp:
    """The quart app, its SSE chats served in front of it, all behind the
    Origin and Host checks."""
    server = state.pipeline.settings.server
    app = with_sse_chat(create_app(state), state.pipeline)
    app = with_openai_api(app, state.pipeline)
    return guard_http(app, server.host, server.allowed_origins)


async def _check_llm(pipeline: Pipeline, settings: Settings) -> None:
    """The start-up check of the LLM (warnings only): a fault in it is logged,
    never the server's end."""
    try:
        await check_llm_at_start(pipeline, settings)
    except Exception as exc:
        log.error("checking the LLM at start-up failed", exc_info=exc)


def _store_sweepers(pipeline: Pipeline) -> list[Sweeper]:
    """Sweepers for the flights, the sessions and the cache, where they expire."""
    sweepers: list[Sweeper] = []
    if pipeline.flights is not None:
        sweepers.append(pipeline.flights.sweep)
    for kind, store in (("session", pipeline.sessions), ("cache entry", pipeline.cache)):
        if isinstance(store, Expiring):
            sweepers.append(functools.partial(_expired, kind, store.expire))
    return sweepers


def _expired(kind: str, expire: Callable[[], int]) -> list[Reap]:
    count = expire()
    return [Reap(kind, f"{count} of them", "expired")] if count else []


async def _drain(state: AppState, grace_s: float, stop_accepting: trio.Event) -> None:
    """Refuse new work, let in-flight requests finish within the grace, then
    cancel the rest; connections close with 1001 as they become idle."""
    log.info("draining", grace_s=grace_s, in_flight=len(state.pipeline.requests))
    state.start_drain()
    with trio.move_on_after(grace_s):
        await state.pipeline.requests.wait_empty()
    cancelled = state.pipeline.requests.cancel_all()
    if cancelled:
        log.warning("drain grace ran out: cancelled requests", cancelled=cancelled)
    # Accepting until now lets /readyz say 503 and late requests hear shutting_down.
    stop_accepting.set()


async def _drain_when_fatal(supervisor: Supervisor, start_drain: Callable[[], None]) -> None:
    """A task that could not go on: drain, as SIGTERM would (serve() then raises)."""
    await supervisor.fatal.wait()
    start_drain()


async def _watch_signals(start_drain: Callable[[], None], scope: trio.CancelScope) -> NoReturn:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        draining = False
        async for signum in signals:
            log.info("signal", signal=signal.Signals(signum).name)
            if not draining:
                draining = True
                start_drain()
            else:
                log.warning("second signal: exiting now")
                scope.cancel()
    raise AssertionError("signal receiver ended")  # pragma: no cover
