"""Prometheus metrics: what chatd counts as it goes, and what it reads when scraped.

Each :class:`Metrics` has its own ``CollectorRegistry`` (never the global one),
so tests and several servers in one process never collide. Two halves:

- *pushed*: the pipeline calls :meth:`Metrics.request_finished`,
  :meth:`Metrics.cancelled` and :meth:`Metrics.frames_sent`, the Redis stores'
  fallbacks :meth:`Metrics.redis_fallback`, as things happen;
- *pulled*: a collector reads the live objects given to :meth:`Metrics.bind`
  (their ``statistics()``) only when scraped, so it costs nothing per request
  and is never stale. It must run in the trio thread that owns them.

====================================== ========= ============== ==========================
name                                   type      labels         source
====================================== ========= ============== ==========================
chatd_requests_total                   counter   path, outcome  request_finished
chatd_time_to_first_token_seconds      histogram path           request_finished
chatd_request_duration_seconds         histogram path           request_finished
chatd_tokens_streamed_total            counter                  request_finished
chatd_shared_answers_total             counter                  request_finished
chatd_cached_answers_total             counter                  request_finished
chatd_cancellations_total              counter   cause          cancelled
chatd_frames_sent_total                counter                  frames_sent
chatd_queue_wait_seconds               histogram                request_finished (queue_s)
chatd_llm_time_to_first_event_seconds  histogram endpoint,      llm_call
                                                 outcome
chatd_llm_call_duration_seconds        histogram endpoint,      llm_call
                                                 outcome
chatd_tool_duration_seconds            histogram tool, outcome  tool_finished
chatd_redis_fallbacks_total            counter   store          redis_fallback
chatd_task_failures_total              counter   task           task_failed
chatd_limiter_in_use                   gauge     limiter        admission
chatd_limiter_capacity                 gauge     limiter        admission
chatd_queue_depth                      gauge                    admission
chatd_queue_capacity                   gauge                    admission
chatd_breaker_state                    gauge     dependency     breakers (0/1/2, below)
chatd_breaker_failures_total           counter   dependency     breakers
chatd_breaker_rejections_total         counter   dependency     breakers
chatd_breaker_transitions_total        counter   dependency, to breakers
chatd_flights_in_flight                gauge                    flights
chatd_flights_started_total            counter                  flights
chatd_flight_joins_total               counter                  flights
chatd_cache_hits_total                 counter                  cache
chatd_cache_misses_total               counter                  cache
chatd_cache_entries                    gauge                    cache
chatd_janitor_reaps_total              counter   kind, reason   janitor
chatd_requests_in_flight               gauge     state          requests
chatd_active_connections               gauge                    connections
====================================== ========= ============== ==========================

``path`` is ``direct``, ``tool_stream``, ``tools`` or ``none`` (refused or failed
before routing); ``outcome`` is ``done``, ``cancelled`` or the protocol error
code; ``store`` is ``cache``, ``sessions`` or ``rate_limits`` (a call answered
from local memory because Redis failed); ``task`` is a long-lived task's
name (``TASKS``, or ``sweeper <name>``); ``chatd_breaker_state`` is 0 closed,
1 half_open, 2 open; ``endpoint`` is an LLM endpoint's breaker name (``llm``,
``llm-fallback-1``), its ``outcome`` ``ok``, ``cancelled`` or the error's code
(``upstream_unavailable``, ``upstream_error``, ``timeout``); a tool's
``outcome`` is ``ok`` or ``error``. No ``_created`` series. Every label
value comes from a small fixed set: never pass ids or messages.

An unbound source (``None``) leaves its metrics *absent*, not zero: a zero
would claim an empty queue or a closed breaker that nobody measured, and
``absent(chatd_queue_depth)`` can alert on a server that was never wired.

Imports nothing of chatd: the objects read are matched by shape (Protocols).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Literal, get_args

import attrs
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate_latest

from chatd.observability.live_metrics import (
    BREAKER_STATES,
    REQUEST_STATES,
    AdmissionView,
    BreakerView,
    CacheView,
    FlightsView,
    LiveCollector,
    ReapCounts,
    Reports,
)

__all__ = [
    "BREAKER_STATES",
    "CANCEL_CAUSES",
    "REDIS_STORES",
    "REQUEST_STATES",
    "TASKS",
    "CancelCause",
    "Metrics",
]

CancelCause = Literal["client_cancel", "disconnect", "deadline", "janitor", "drain"]
"""Why a request was cancelled."""
CANCEL_CAUSES: tuple[CancelCause, ...] = get_args(CancelCause)
"""Each cause's series starts at zero, so ``rate()`` sees its first one."""

REDIS_STORES = ("cache", "sessions", "rate_limits")
"""The ``store`` label of ``chatd_redis_fallbacks_total``, zero-filled like causes."""

TASKS = (
    "janitor",
    "queue_positions",
    "flights_reader",
    "connection_setup",
    "connection_reader",
    "connection_writer",
)
"""The ``task`` label of ``chatd_task_failures_total``, zero-filled; sweepers add theirs."""


# First tokens take from ~10 ms (cache, FAQ tool) to tens of seconds (a slow LLM).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30)
# Whole answers stream for seconds to minutes (limits.request_timeout_s is 120 s).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
# Tools take from under a millisecond (calculator) to their timeout (10 s).
TOOL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A wait for a slot: none at all, or up to limits.queue_timeout_s (10 s).
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# `_created` series double every counter and histogram for a value nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped in prometheus-client)


@attrs.define
class Metrics:
    """chatd's metrics in a registry of their own; serve :meth:`render` at ``/metrics``."""

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry, init=False)
    _live: LiveCollector = attrs.field(factory=LiveCollector, init=False)
    _requests: Counter = attrs.field(init=False)
    _ttft: Histogram = attrs.field(init=False)
    _duration: Histogram = attrs.field(init=False)
    _tokens: Counter = attrs.field(init=False)
    _shared: Counter = attrs.field(init=False)
    _cached: Counter = attrs.field(init=False)
    _cancellations: Counter = attrs.field(init=False)
    _frames: Counter = attrs.field(init=False)
    _redis_fallbacks: Counter = attrs.field(init=False)
    _task_failures: Counter = attrs.field(init=False)
    _queue_wait: Histogram = attrs.field(init=False)
    _llm_ttft: Histogram = attrs.field(init=False)
    _llm_duration: Histogram = attrs.field(init=False)
    _tool_duration: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, documentation, labels, registry=self.registry)

        def histogram(
            name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
        ) -> Histogram:
            return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

        self._requests = counter("chatd_requests_total", "Requests finished.", ["path", "outcome"])
        self._ttft = histogram(
            "chatd_time_to_first_token_seconds",
            "Chat frame to first token.",
            TTFT_BUCKETS,
            ["path"],
        )
        self._duration = histogram(
            "chatd_request_duration_seconds",
            "Chat frame to terminal event.",
            DURATION_BUCKETS,
            ["path"],
        )
        self._queue_wait = histogram(
            "chatd_queue_wait_seconds", "Waits for a limiter slot, per request.", QUEUE_BUCKETS
        )
        endpoint = ["endpoint", "outcome"]
        self._llm_ttft = histogram(
            "chatd_llm_time_to_first_event_seconds",
            "LLM call to its first event, by endpoint and how the call ended.",
            TTFT_BUCKETS,
            endpoint,
        )
        self._llm_duration = histogram(
            "chatd_llm_call_duration_seconds",
            "LLM calls, start to end, by endpoint and outcome.",
            DURATION_BUCKETS,
            endpoint,
        )
        self._tool_duration = histogram(
            "chatd_tool_duration_seconds",
            "Tool runs, by tool and outcome.",
            TOOL_BUCKETS,
            ["tool", "outcome"],
        )
        self._tokens = counter("chatd_tokens_streamed_total", "Completion tokens streamed.")
        self._shared = counter("chatd_shared_answers_total", "Answers that followed a flight.")
        self._cached = counter("chatd_cached_answers_total", "Answers replayed from the cache.")
        self._cancellations = counter(
            "chatd_cancellations_total", "Cancelled, by cause.", ["cause"]
        )
        for cause in CANCEL_CAUSES:
            self._cancellations.labels(cause)
        self._frames = counter("chatd_frames_sent_total", "WebSocket frames sent.")
        self._redis_fallbacks = counter(
            "chatd_redis_fallbacks_total",
            "Calls served from local memory, Redis failing.",
            ["store"],
        )
        for store in REDIS_STORES:
            self._redis_fallbacks.labels(store)
        self._task_failures = counter(
            "chatd_task_failures_total", "Failures of long-lived tasks, by task.", ["task"]
        )
        for task in TASKS:
            self._task_failures.labels(task)
        self.registry.register(self._live)

    def request_finished(
        self,
        path: str | None,
        outcome: str,
        ttft_s: float | None,
        duration_s: float,
        tokens: int,
        shared: bool,
        cached: bool,
        queue_s: float = 0.0,
    ) -> None:
        """Count one request at its terminal event (or when it was dropped)."""
        label = path or "none"
        self._queue_wait.observe(queue_s)
        self._requests.labels(label, outcome).inc()
        if ttft_s is not None:
            self._ttft.labels(label).observe(ttft_s)
        self._duration.labels(label).observe(duration_s)
        if tokens:
            self._tokens.inc(tokens)
        if shared:
            self._shared.inc()
        if cached:
            self._cached.inc()

    def llm_call(
        self, endpoint: str, outcome: str, first_event_s: float | None, duration_s: float
    ) -> None:
        """Count one call to an LLM endpoint: its first event's time, if it came."""
        if first_event_s is not None:
            self._llm_ttft.labels(endpoint, outcome).observe(first_event_s)
        self._llm_duration.labels(endpoint, outcome).observe(duration_s)

    def tool_finished(self, tool: str, ok: bool, duration_s: float) -> None:
        """Count one tool run (``tool`` is a configured tool's name: a fixed set)."""
        self._tool_duration.labels(tool, "ok" if ok else "error").observe(duration_s)

    def cancelled(self, cause: CancelCause) -> None:
        """Count one cancelled request, by why."""
        self._cancellations.labels(cause).inc()

    def frames_sent(self, count: int) -> None:
        """Count WebSocket frames written to clients."""
        self._frames.inc(count)

    def redis_fallback(self, store: str) -> None:
        """Count one call to a Redis store answered from local memory instead."""
        self._redis_fallbacks.labels(store).inc()

    def task_failed(self, task: str) -> None:
        """Count one failure of a long-lived task (the supervisor's ``on_failure``)."""
        self._task_failures.labels(task).inc()

    def bind(
        self,
        admission: Reports[AdmissionView] | None = None,
        breakers: Mapping[str, Reports[BreakerView]] | None = None,
        flights: Reports[FlightsView] | None = None,
        cache: Reports[CacheView] | None = None,
        janitor: ReapCounts | None = None,
        requests: Reports[Mapping[str, int]] | None = None,
        connections: Sized | Callable[[], int] | None = None,
    ) -> None:
        """Read these live objects at every scrape, replacing earlier bindings.

        ``breakers`` maps the ``dependency`` label to its breaker;
        ``connections`` is a live collection or a function counting them.
        """
        self.registry.unregister(self._live)
        self._live = LiveCollector(
            admission, breakers, flights, cache, janitor, requests, connections
        )
        self.registry.register(self._live)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its ``Content-Type``."""
        return _generate_latest(self.registry), CONTENT_TYPE_LATEST
