"""The sample Grafana dashboard and Vector config agree with what chatd exposes.

Grafana, Loki, Prometheus and Vector are not installed where these tests run,
so nothing here renders a panel or runs ``vector validate``: the checks are
that every metric a panel queries is one chatd really exposes (under the exact
sample name PromQL sees: ``_bucket`` for histograms, ``_total`` for counters),
and that the Vector pipeline is wired file → remap → loki. The README lists
the manual run that covers the rest.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.test_metrics import fully_bound

HERE = Path(__file__).resolve().parents[2] / "scripts" / "observability"
DASHBOARD = HERE / "grafana-dashboard.json"
VECTOR = HERE / "vector.toml"
METRIC = re.compile(r"\bchatd_[a-zA-Z0-9_]+")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def promql(board: dict[str, Any]) -> list[str]:
    """Every Prometheus expression: panel targets and query variables."""
    exprs = [
        target["expr"]
        for panel in panels(board)
        if panel["datasource"]["type"] == "prometheus"
        for target in panel["targets"]
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query" and variable["datasource"]["type"] == "prometheus":
            exprs.append(variable["definition"])
            exprs.append(variable["query"]["query"])
    return exprs


async def exposed_sample_names() -> set[str]:
    async with trio.open_nursery() as nursery:
        metrics = await fully_bound(nursery)
    text = metrics.render()[0].decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


async def test_every_dashboard_metric_is_exposed() -> None:
    """Each chatd_* name in any PromQL of the dashboard is a sample chatd exposes."""
    exposed = await exposed_sample_names()
    referenced = {name for expr in promql(dashboard()) for name in METRIC.findall(expr)}
    assert referenced, "no chatd metric found in the dashboard"
    assert referenced - exposed == set()


def test_dashboard_covers_the_design() -> None:
    """TTFT, throughput, errors, breakers, queue, limiters, cancellations, reaps."""
    referenced = {name for expr in promql(dashboard()) for name in METRIC.findall(expr)}
    assert {
        "chatd_time_to_first_token_seconds_bucket",
        "chatd_requests_total",
        "chatd_tokens_streamed_total",
        "chatd_breaker_state",
        "chatd_queue_depth",
        "chatd_limiter_in_use",
        "chatd_limiter_capacity",
        "chatd_cancellations_total",
        "chatd_janitor_reaps_total",
        "chatd_llm_time_to_first_event_seconds_bucket",
        "chatd_llm_call_duration_seconds_count",
        "chatd_tool_duration_seconds_bucket",
        "chatd_cache_hits_total",
        "chatd_cache_misses_total",
        "chatd_queue_wait_seconds_bucket",
        "chatd_breaker_transitions_total",
    } <= referenced
    exprs = promql(dashboard())
    assert any(
        "histogram_quantile(0.99" in e and "by (path, le)" in e and "first_token" in e
        for e in exprs
    )
    assert any('outcome!~"done|cancelled"' in e for e in exprs)


def test_promql_brackets_balance() -> None:
    """A cheap syntax check, as no PromQL parser is at hand: (), [] and {} pair up."""
    pairs = {")": "(", "]": "[", "}": "{"}
    for expr in promql(dashboard()):
        stack: list[str] = []
        for char in re.sub(r'"[^"]*"', '""', expr):
            if char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack and stack.pop() == pairs[char], expr
        assert not stack, expr


def test_dashboard_shape() -> None:
    """Schema 36+, Prometheus and Loki data source variables used by every panel,
    unique ids, panels on the 24-column grid without overlapping."""
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["prometheus"]["type"] == "datasource"
    assert variables["prometheus"]["query"] == "prometheus"
    assert variables["loki"]["type"] == "datasource"
    assert variables["loki"]["query"] == "loki"
    assert variables["request_id"]["type"] == "textbox"
    all_panels = list(panels(board))
    assert len({p["id"] for p in all_panels}) == len(all_panels)
    taken: set[tuple[int, int]] = set()
    for panel in all_panels:
        kind = panel["datasource"]["type"]
        assert panel["datasource"]["uid"] == "${" + kind + "}"
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_logs_panel_filters_by_request_id() -> None:
    """A Loki logs panel selects app="chatd" and line-filters by $request_id."""
    logs = [p for p in panels(dashboard()) if p["type"] == "logs"]
    assert len(logs) == 1
    assert logs[0]["datasource"]["type"] == "loki"
    assert [t["expr"] for t in logs[0]["targets"]] == ['{app="chatd"} |= "$request_id"']


def test_vector_pipeline_wiring() -> None:
    """file source → remap (parse_json) → loki sink, labelled app/level/event."""
    config = tomllib.loads(VECTOR.read_text())
    [(source_id, source)] = config["sources"].items()
    assert source["type"] == "file"
    assert source["include"] == ["${CHATD_LOG_FILE:-/var/log/chatd/chatd.log}"]
    [(transform_id, transform)] = config["transforms"].items()
    assert transform["type"] == "remap"
    assert transform["inputs"] == [source_id]
    assert ". = parse_json!(.message)" in transform["source"]
    for field in ("request_id", "level", "event"):
        assert f".{field} =" in transform["source"]
    [sink] = config["sinks"].values()
    assert sink["type"] == "loki"
    assert sink["inputs"] == [transform_id]
    assert sink["endpoint"] == "http://localhost:3100"
    assert sink["encoding"]["codec"] == "json"
    assert sink["labels"] == {"app": "chatd", "level": "{{ level }}", "event": "{{ event }}"}
