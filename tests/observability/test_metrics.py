"""Metrics: pushed series count what the pipeline reports; pulled ones read live objects."""

from __future__ import annotations

import re
from typing import get_args

import prometheus_client
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from chatd.config import BreakerSettings, JanitorSettings, LimitsSettings
from chatd.exceptions import BreakerOpen, UpstreamError
from chatd.observability import metrics as metrics_module
from chatd.observability.metrics import CANCEL_CAUSES, REQUEST_STATES, Metrics
from chatd.pipeline.admission import Admission
from chatd.pipeline.flights import Flight, Flights
from chatd.pipeline.registry import RequestRegistry, RequestState
from chatd.pipeline.turn import Turn
from chatd.resilience.breaker import CircuitBreaker
from chatd.resilience.janitor import Janitor, Reap
from chatd.stores.cache import MemoryAnswerCache
from chatd.tools.base import ToolContext

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of one exposition, keyed by name and labels."""
    text, _content_type = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(UpstreamError), breaker.attempt():
        raise UpstreamError("boom")


def test_request_finished_counts_by_path_and_outcome() -> None:
    """One request: its counter, both histograms, tokens, shared and cached."""
    metrics = Metrics()
    metrics.request_finished("direct", "done", 0.2, 1.5, 42, shared=True, cached=False)
    metrics.request_finished("direct", "done", 0.03, 0.5, 8, shared=False, cached=True)
    s = scrape(metrics)
    assert value(s, "chatd_requests_total", path="direct", outcome="done") == 2
    assert value(s, "chatd_time_to_first_token_seconds_count", path="direct") == 2
    assert value(s, "chatd_time_to_first_token_seconds_sum", path="direct") == pytest.approx(0.23)
    assert value(s, "chatd_time_to_first_token_seconds_bucket", path="direct", le="0.05") == 1
    assert value(s, "chatd_time_to_first_token_seconds_bucket", path="direct", le="0.25") == 2
    assert value(s, "chatd_request_duration_seconds_sum", path="direct") == pytest.approx(2.0)
    assert value(s, "chatd_request_duration_seconds_bucket", path="direct", le="1.0") == 1
    assert value(s, "chatd_tokens_streamed_total") == 50
    assert value(s, "chatd_shared_answers_total") == 1
    assert value(s, "chatd_cached_answers_total") == 1


def test_request_without_path_or_first_token() -> None:
    """A refused request counts under path "none", its error code as outcome, and no TTFT."""
    metrics = Metrics()
    metrics.request_finished(None, "overloaded", None, 0.001, 0, shared=False, cached=False)
    s = scrape(metrics)
    assert value(s, "chatd_requests_total", path="none", outcome="overloaded") == 1
    assert value(s, "chatd_request_duration_seconds_count", path="none") == 1
    assert value(s, "chatd_time_to_first_token_seconds_count", path="none") is None
    assert value(s, "chatd_tokens_streamed_total") == 0
    assert value(s, "chatd_shared_answers_total") == 0


def test_histogram_buckets_span_10ms_to_30s() -> None:
    """TTFT buckets start at 10 ms and end at 30 s (then +Inf)."""
    metrics = Metrics()
    metrics.request_finished("tools", "done", 1.0, 2.0, 1, shared=False, cached=False)
    bounds = sorted(
        float(dict(labels)["le"])
        for name, labels in scrape(metrics)
        if name == "chatd_time_to_first_token_seconds_bucket"
    )
    assert bounds[0] == 0.01
    assert bounds[-2:] == [30.0, float("inf")]


def test_cancellations_by_cause_start_at_zero() -> None:
    """Every cause is exposed from the start; cancelled() counts only its own."""
    metrics = Metrics()
    metrics.cancelled("disconnect")
    metrics.cancelled("disconnect")
    metrics.cancelled("janitor")
    s = scrape(metrics)
    assert {c: value(s, "chatd_cancellations_total", cause=c) for c in CANCEL_CAUSES} == {
        "client_cancel": 0,
        "disconnect": 2,
        "deadline": 0,
        "janitor": 1,
        "drain": 0,
    }


def test_frames_sent() -> None:
    """frames_sent adds its count."""
    metrics = Metrics()
    metrics.frames_sent(3)
    metrics.frames_sent(4)
    assert value(scrape(metrics), "chatd_frames_sent_total") == 7


def test_registries_are_private() -> None:
    """Two Metrics in one process neither collide nor touch the global registry."""
    first, second = Metrics(), Metrics()
    first.frames_sent(5)
    assert value(scrape(second), "chatd_frames_sent_total") == 0
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("chatd_") for name in global_names)


def test_render_content_type() -> None:
    """render() hands back the text format's content type for the /metrics response."""
    _text, content_type = Metrics().render()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert content_type.startswith("text/plain")


def test_unbound_sources_are_absent() -> None:
    """With nothing bound, no pulled metric appears (absent, not a made-up zero)."""
    pulled = {
        "chatd_limiter_in_use",
        "chatd_queue_depth",
        "chatd_breaker_state",
        "chatd_flights_in_flight",
        "chatd_cache_entries",
        "chatd_janitor_reaps_total",
        "chatd_requests_in_flight",
        "chatd_active_connections",
    }
    metrics = Metrics()
    assert not pulled & names(scrape(metrics))
    metrics.bind()
    assert not pulled & names(scrape(metrics))


def test_request_states_match_the_registry() -> None:
    """The zero-filled states are exactly chatd.pipeline.registry.RequestState."""
    assert get_args(RequestState) == REQUEST_STATES


async def test_admission_limiters_and_queue(autojump_clock: trio.abc.Clock) -> None:
    """A real Admission: slots held, capacities, and a queued waiter, read at scrape time."""
    admission = Admission(LimitsSettings(prepare=1, llm_streams=3, max_queue=5))
    metrics = Metrics()
    metrics.bind(admission=admission)
    s = scrape(metrics)
    assert value(s, "chatd_limiter_in_use", limiter="prepare") == 0
    assert value(s, "chatd_limiter_capacity", limiter="prepare") == 1
    assert value(s, "chatd_limiter_capacity", limiter="llm_streams") == 3
    assert value(s, "chatd_queue_capacity") == 5

    async def hold() -> None:
        async with admission.slot(admission.prepare, lambda _position: None):
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await trio.sleep(0.5)
        s = scrape(metrics)
        assert value(s, "chatd_limiter_in_use", limiter="prepare") == 1
        assert value(s, "chatd_queue_depth") == 1
    s = scrape(metrics)
    assert value(s, "chatd_limiter_in_use", limiter="prepare") == 0
    assert value(s, "chatd_queue_depth") == 0


def test_default_limits() -> None:
    """Admission(LimitsSettings()) reports the configured defaults."""
    limits = LimitsSettings()
    metrics = Metrics()
    metrics.bind(admission=Admission(limits))
    s = scrape(metrics)
    assert value(s, "chatd_limiter_capacity", limiter="prepare") == limits.prepare
    assert value(s, "chatd_limiter_capacity", limiter="llm_streams") == limits.llm_streams
    assert value(s, "chatd_queue_capacity") == limits.max_queue


def test_breakers_state_failures_rejections() -> None:
    """A real breaker driven open, then half-open by its clock; another stays closed."""
    now = [0.0]
    settings = BreakerSettings(failure_threshold=2, open_timeout_s=30)
    llm = CircuitBreaker("llm", settings, clock=lambda: now[0])
    kb = CircuitBreaker("kb", settings, clock=lambda: now[0])
    metrics = Metrics()
    metrics.bind(breakers={"llm": llm, "kb": kb})
    fail(llm)
    fail(llm)
    with pytest.raises(BreakerOpen), llm.attempt():
        pass
    s = scrape(metrics)
    assert value(s, "chatd_breaker_state", dependency="llm") == 2
    assert value(s, "chatd_breaker_failures_total", dependency="llm") == 2
    assert value(s, "chatd_breaker_rejections_total", dependency="llm") == 1
    assert value(s, "chatd_breaker_state", dependency="kb") == 0
    assert value(s, "chatd_breaker_failures_total", dependency="kb") == 0
    now[0] = 30.0
    assert value(scrape(metrics), "chatd_breaker_state", dependency="llm") == 1


async def test_cache_hits_misses_entries() -> None:
    """A real MemoryAnswerCache: one put, one hit, one miss."""
    cache: MemoryAnswerCache[str] = MemoryAnswerCache(ttl_s=60, max_entries=10)
    metrics = Metrics()
    metrics.bind(cache=cache)
    await cache.put("k", "answer")
    assert await cache.get("k") == "answer"
    assert await cache.get("other") is None
    s = scrape(metrics)
    assert value(s, "chatd_cache_hits_total") == 1
    assert value(s, "chatd_cache_misses_total") == 1
    assert value(s, "chatd_cache_entries") == 1


def test_janitor_reaps_by_kind_and_reason() -> None:
    """A real Janitor's reap counter, one series per (kind, reason)."""
    reaps = [Reap("request", "req_1", "stuck queued"), Reap("connection", "conn_1", "idle")]
    janitor = Janitor(1.0, [lambda: reaps])
    metrics = Metrics()
    metrics.bind(janitor=janitor)
    janitor.sweep()
    janitor.sweep()
    s = scrape(metrics)
    assert value(s, "chatd_janitor_reaps_total", kind="request", reason="stuck queued") == 2
    assert value(s, "chatd_janitor_reaps_total", kind="connection", reason="idle") == 2


async def test_requests_in_flight_by_state() -> None:
    """A real RequestRegistry: every state is exposed, zero when empty."""
    registry = RequestRegistry(JanitorSettings())
    metrics = Metrics()
    metrics.bind(requests=registry)
    with registry.track("req_1"), registry.track("req_2") as second:
        second.enter("streaming")
        s = scrape(metrics)
        by_state = {st: value(s, "chatd_requests_in_flight", state=st) for st in REQUEST_STATES}
        assert by_state == {
            "preparing": 1,
            "queued": 0,
            "routing": 0,
            "tools": 0,
            "streaming": 1,
        }
    s = scrape(metrics)
    assert all(value(s, "chatd_requests_in_flight", state=st) == 0 for st in REQUEST_STATES)


async def test_flights_started_and_joined() -> None:
    """Real Flights: one started, one join, one in flight until both leave."""

    async def unsent(_event: object) -> None:
        raise AssertionError("not sent")

    def make_turn() -> Turn:
        return Turn(unsent, ToolContext("req_1"))

    async def work(_flight: Flight) -> None:
        await trio.sleep_forever()

    metrics = Metrics()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            flights = Flights(nursery, deadline_s=60)
            metrics.bind(flights=flights)
            first, created = flights.join("key", make_turn, work)
            second, joined_created = flights.join("key", make_turn, work)
            assert first is second and created and not joined_created
            s = scrape(metrics)
            assert value(s, "chatd_flights_in_flight") == 1
            assert value(s, "chatd_flights_started_total") == 1
            assert value(s, "chatd_flight_joins_total") == 1
            flights.leave(first, created=True)
            flights.leave(second, created=False)
    assert value(scrape(metrics), "chatd_flights_in_flight") == 0


def test_connections_from_a_collection_or_a_function() -> None:
    """connections= takes the live set itself, or a function that counts."""
    live: set[object] = {object(), object()}
    metrics = Metrics()
    metrics.bind(connections=live)
    assert value(scrape(metrics), "chatd_active_connections") == 2
    live.add(object())
    assert value(scrape(metrics), "chatd_active_connections") == 3
    metrics.bind(connections=lambda: 7)
    assert value(scrape(metrics), "chatd_active_connections") == 7


def test_bind_replaces_earlier_bindings() -> None:
    """A second bind() drops what the first bound, and never double-registers."""
    metrics = Metrics()
    metrics.bind(connections=lambda: 1, admission=Admission(LimitsSettings()))
    metrics.bind(connections=lambda: 2)
    s = scrape(metrics)
    assert value(s, "chatd_active_connections") == 2
    assert "chatd_queue_depth" not in names(s)


async def fully_bound(nursery: trio.Nursery) -> Metrics:
    """Metrics bound to one of every real source, each with something to show,
    after one finished request and one cancellation."""
    metrics = Metrics()
    breaker = CircuitBreaker("llm", BreakerSettings(failure_threshold=1))
    fail(breaker)
    cache: MemoryAnswerCache[str] = MemoryAnswerCache(ttl_s=60, max_entries=10)
    await cache.put("k", "answer")
    await cache.get("k")
    janitor = Janitor(1.0, [lambda: [Reap("flight", "f1", "no subscribers")]])
    janitor.sweep()
    metrics.bind(
        admission=Admission(LimitsSettings()),
        breakers={"llm": breaker},
        flights=Flights(nursery, deadline_s=60),
        cache=cache,
        janitor=janitor,
        requests=RequestRegistry(JanitorSettings()),
        connections=set(),
    )
    metrics.request_finished("direct", "done", 0.1, 0.5, 12, shared=True, cached=True)
    metrics.cancelled("client_cancel")
    metrics.frames_sent(1)
    metrics.llm_call("llm", "ok", 0.3, 1.2)
    metrics.tool_finished("calculator", True, 0.001)
    return metrics


async def test_metric_names_follow_conventions() -> None:
    """Families are snake_case chatd_*, counters' samples end in _total, histograms
    are in _seconds, and every documented name is exposed."""
    async with trio.open_nursery() as nursery:
        metrics = await fully_bound(nursery)
    families = list(text_string_to_metric_families(metrics.render()[0].decode()))
    exposed = set()
    for family in families:
        assert re.fullmatch(r"chatd_[a-z0-9_]+", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
            exposed.add(family.name)
        elif family.type == "counter":
            assert {s.name for s in family.samples} <= {
                f"{family.name}_total",
                f"{family.name}_created",
            }
            exposed.add(f"{family.name}_total")
        elif not family.name.endswith("_created"):
            assert family.type == "gauge"
            exposed.add(family.name)
    documented = set(re.findall(r"^(chatd_\w+) ", metrics_module.__doc__ or "", re.MULTILINE))
    assert documented == exposed
