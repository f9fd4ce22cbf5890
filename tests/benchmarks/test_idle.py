"""RSS per idle connection and reading chatd's gauges (benchmarks/loadgen/idle.py)."""

from __future__ import annotations

from loadgen.idle import kib_per_connection, metric_value


def test_per_connection_is_the_delta_and_the_slope() -> None:
    points = [(0, 1000), (100, 5000), (200, 9000), (200, 9200)]
    figures = kib_per_connection(points)
    assert figures["delta_kib_per_connection"] == 41.0
    assert 40 < figures["slope_kib_per_connection"] < 43


def test_two_points_give_the_delta_as_the_slope() -> None:
    assert kib_per_connection([(0, 100), (10, 300)]) == {
        "delta_kib_per_connection": 20.0,
        "slope_kib_per_connection": 20.0,
    }


def test_metric_value_reads_an_unlabelled_sample() -> None:
    text = (
        "# HELP chatd_active_connections Open WebSocket connections.\n"
        "# TYPE chatd_active_connections gauge\n"
        "chatd_active_connections 2000.0\n"
        "chatd_active_connections_total 3.0\n"
    )
    assert metric_value(text, "chatd_active_connections") == 2000.0
    assert metric_value(text, "chatd_cache_entries") is None
