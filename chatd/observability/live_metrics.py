"""What :class:`~chatd.observability.metrics.Metrics` reads when scraped: the
live objects given to ``Metrics.bind`` (their ``statistics()``), read only
at scrape time, so they cost nothing per request and are never stale. It
must run in the trio thread that owns them. The objects are matched by
shape (these Protocols): nothing of chatd is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from typing import Protocol, TypeVar

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "BREAKER_STATES",
    "REQUEST_STATES",
    "AdmissionView",
    "BreakerView",
    "CacheView",
    "FlightsView",
    "LiveCollector",
    "ReapCounts",
    "Reports",
]

REQUEST_STATES = ("preparing", "queued", "routing", "tools", "streaming")
"""``chatd.pipeline.registry.RequestState``, zero-filled (a test keeps them equal)."""

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""``chatd_breaker_state`` values."""


T_co = TypeVar("T_co", covariant=True)


class Reports(Protocol[T_co]):
    """Anything with trio's ``statistics()`` habit."""

    def statistics(self) -> T_co: ...


class AdmissionView(Protocol):
    """What is read of ``AdmissionStatistics``."""

    @property
    def prepare_in_use(self) -> int: ...
    @property
    def prepare_total(self) -> int: ...
    @property
    def llm_streams_in_use(self) -> int: ...
    @property
    def llm_streams_total(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def max_queue(self) -> int: ...


class BreakerView(Protocol):
    """What is read of ``BreakerStatistics``."""

    @property
    def state(self) -> str: ...
    @property
    def total_failures(self) -> int: ...
    @property
    def rejections(self) -> int: ...
    @property
    def transitions(self) -> Mapping[str, int]: ...


class FlightsView(Protocol):
    """What is read of ``FlightsStatistics``."""

    @property
    def in_flight(self) -> int: ...
    @property
    def started(self) -> int: ...
    @property
    def joined(self) -> int: ...


class CacheView(Protocol):
    """What is read of ``CacheStatistics``."""

    @property
    def entries(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...


class ReapCounts(Protocol):
    """A ``Janitor``: its reaps counted by (kind, reason)."""

    @property
    def reaps(self) -> Mapping[tuple[str, str], int]: ...


@attrs.frozen(eq=False)  # the registry keys collectors by identity
class LiveCollector(Collector):  # an ABC up to prometheus-client 0.23, a Protocol since
    """Reads the bound objects at scrape time; see the module docstring."""

    admission: Reports[AdmissionView] | None = None
    breakers: Mapping[str, Reports[BreakerView]] | None = None
    flights: Reports[FlightsView] | None = None
    cache: Reports[CacheView] | None = None
    janitor: ReapCounts | None = None
    requests: Reports[Mapping[str, int]] | None = None
    connections: Sized | Callable[[], int] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.admission is not None:
            a = self.admission.statistics()
            in_use = _family("chatd_limiter_in_use", "Limiter slots held.", ["limiter"])
            capacity = _family("chatd_limiter_capacity", "Limiter slots.", ["limiter"])
            in_use.add_metric(["prepare"], a.prepare_in_use)
            capacity.add_metric(["prepare"], a.prepare_total)
            in_use.add_metric(["llm_streams"], a.llm_streams_in_use)
            capacity.add_metric(["llm_streams"], a.llm_streams_total)
            yield from (in_use, capacity)
            yield _family("chatd_queue_depth", "Requests waiting for a slot.", value=a.queued)
            yield _family("chatd_queue_capacity", "Waiters allowed.", value=a.max_queue)
        if self.breakers is not None:
            state = _family("chatd_breaker_state", "0 closed, 1 half_open, 2 open.", ["dependency"])
            failures = _family("chatd_breaker_failures_total", "Calls failed.", ["dependency"])
            rejections = _family("chatd_breaker_rejections_total", "Calls refused.", ["dependency"])
            transitions = _family(
                "chatd_breaker_transitions_total",
                "State changes, by new state.",
                ["dependency", "to"],
            )
            for name, breaker in sorted(self.breakers.items()):
                # statistics() performs a due open -> half_open transition, as /readyz does.
                b = breaker.statistics()
                state.add_metric([name], BREAKER_STATES[b.state])
                failures.add_metric([name], b.total_failures)
                rejections.add_metric([name], b.rejections)
                for to in BREAKER_STATES:
                    transitions.add_metric([name, to], b.transitions.get(to, 0))
            yield from (state, failures, rejections, transitions)
        if self.flights is not None:
            f = self.flights.statistics()
            yield _family("chatd_flights_in_flight", "Flights under way.", value=f.in_flight)
            yield _family("chatd_flights_started_total", "Flights started.", value=f.started)
            yield _family("chatd_flight_joins_total", "Requests that joined.", value=f.joined)
        if self.cache is not None:
            c = self.cache.statistics()
            yield _family("chatd_cache_hits_total", "Answer cache hits.", value=c.hits)
            yield _family("chatd_cache_misses_total", "Answer cache misses.", value=c.misses)
            yield _family("chatd_cache_entries", "Answers in the cache.", value=c.entries)
        if self.janitor is not None:
            reaps = _family("chatd_janitor_reaps_total", "Things reaped.", ["kind", "reason"])
            for (kind, reason), count in sorted(self.janitor.reaps.items()):
                reaps.add_metric([kind, reason], count)
            yield reaps
        if self.requests is not None:
            by_state = dict.fromkeys(REQUEST_STATES, 0) | dict(self.requests.statistics())
            in_flight = _family("chatd_requests_in_flight", "Requests, by state.", ["state"])
            for request_state, count in by_state.items():
                in_flight.add_metric([request_state], count)
            yield in_flight
        if self.connections is not None:
            live = self.connections
            count = live() if callable(live) else len(live)
            yield _family("chatd_active_connections", "Open WebSocket connections.", value=count)


def _family(
    name: str, documentation: str, labels: Sequence[str] = (), value: float | None = None
) -> CounterMetricFamily | GaugeMetricFamily:
    """A counter if ``name`` ends in ``_total``, else a gauge; ``value`` when unlabelled."""
    kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
    return kind(name, documentation, value=value, labels=labels or None)
