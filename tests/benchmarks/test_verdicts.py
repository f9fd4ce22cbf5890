"""The targets' verdicts and the report of a targets run (loadgen/verdicts.py, targets_report.py,
targets.py)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import targets
from loadgen.floor import capacity, per_token
from loadgen.targets_report import markdown
from loadgen.verdicts import Goal, target_rows, verdict

from tests.benchmarks.snippets import assert_contains


def lat(p50: float, p95: float, p99: float) -> dict[str, float]:
    return {"n": 100, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": p99 + 1}


def wave(calls: int, shared: int = 0, cached: int = 0) -> dict[str, Any]:
    return {"chats": 1000, "upstream_calls": calls, "done": 1000, "shared": shared,
            "cached": cached, "errors": {}, "client_ttft": lat(310, 330, 350),
            "chatd_cpu_s": 1.0}  # fmt: skip


def idle(kib: float) -> dict[str, Any]:
    return {"connections": 2000, "server_saw_connections": 2000.0, "rss_before_kib": 60_000,
            "rss_open_kib": 60_000 + 2000 * kib, "delta_kib_per_connection": kib,
            "slope_kib_per_connection": kib, "answered_after": 1,
            "points": [(0, 60_000), (2000, 60_000 + 2000 * kib)]}  # fmt: skip


def sections() -> dict[str, Any]:
    """A result's sections as targets.py makes them, every target met but two."""
    run = {"requests": 100, "answered": 100, "errors_by_code": {}, "tokens": 10_000,
           "token_frames": 5000, "wall_s": 10.0, "overhead": {"p99_ms": 4.0},
           "machine_cores_busy": 1.5}  # fmt: skip
    floor = {"relay": per_token([{**run, "chatd_cpu_s": 0.2}]),
             "chatd": per_token([{**run, "chatd_cpu_s": 0.3}])}  # fmt: skip
    kinds = ("tool_stream", "tools_calculator", "tools_faq_unsure")
    return {
        "streams": {
            "users": 1000, "ttft_ms": 300, "tokens_per_s_each": 5, "duration_s": 30,
            "requests": 3000, "answered": 3000, "client_errors": {},
            "client_ttft": lat(320, 340, 360), "overhead": lat(20, 40, 60),
            "samples": [{"in_flight": 990}], "chatd_cpu_busy": 0.5,
            "tokens_per_s": 5000, "chatd_rss_kib": {"start": 60_000, "peak": 90_000, "end": 80_000},
        },
        "floor": {
            "users": 200, "tokens_per_s_each": 40, "ttft_ms": 300, "duration_s": 20, "rounds": 2,
            "demanded_tokens_per_s": 8000, "servers": floor, "chatd_over_relay": 1.5,
            "chatd_capacity": capacity(30.0, 40), "relay_capacity": capacity(20.0, 40),
        },
        "storm": {"n": 1000, "connections": 10,
                  "configs": {"on": {"waves": [wave(1, shared=999), wave(0, cached=1000)]},
                              "off": {"waves": [wave(1000), wave(1000)]}}},
        "paths": {
            "rounds": 30, "ttft_ms": 300, "tokens_per_s": 40,
            "paths": {k: {"client": {"n": 30, "p50_ms": 300.0, "p95_ms": 310.0},
                          "server_p50_ms": 299.0, "sim_floor_ms": 300.0} for k in kinds},
            "ratios_b_over_a": {k: {"ratio_of_medians": 0.42, "ratio_of_p95": 0.43,
                                    "sim_floor_ratio": 0.6} for k in kinds[1:]},
        },
        "cancels": {"users": 50, "cancel_to_close": {"cancels": 1000, "closes_matched": 1000,
                                                     "no_close_seen": 0, "closed_before": 0,
                                                     **lat(2, 5, 9)}},
        "idle": {"chatd": idle(51.0), "relay": idle(21.0)},
        "logging": {
            "connections": 50, "chats_per_connection": 6, "rounds": 6,
            "sim": {"ttft_ms": 20, "tokens_per_s": 500}, "cpu_on_over_off": 1.02,
            "cpu_on_minus_off_us": 100.0,
            "configs": {label: {"requests": 1800, "chatd_cpu_us_per_request": 5000.0,
                                "chatd_cpu_us_per_request_by_round": [5000.0],
                                "log_lines_per_request": 9, "request_p50_ms": 150.0,
                                "request_p95_ms": 200.0} for label in ("logs-on", "logs-off")},
        },
        "soak": {
            "scenario": "mix", "users": 50, "ttft_ms": 5, "tokens_per_s": 2000, "growth": 0.12,
            "requests": 50_000, "answered": 50_000, "errors_by_code": {}, "cached": 10,
            "wall_s": 300.0,
            "checkpoints": [{"requests": 5000, "rss_kib": 80_000, "cache_entries": 5000.0,
                             "chatd_cpu_s": 30.0},
                            {"requests": 50_000, "rss_kib": 89_600, "cache_entries": 10_000.0,
                             "chatd_cpu_s": 300.0}],
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("goal", "value", "met"),
    [(Goal("<=", 50), 50, True), (Goal("<=", 50), 50.1, False), (Goal(">=", 1000), 999, False),
     (Goal(">=", 1000), 1000, True), (Goal("==", 1), 1, True), (Goal("==", 0), 2, False)],
)  # fmt: skip
def test_goal_compares_with_its_limit(goal: Goal, value: float, met: bool) -> None:
    assert goal.met(value) is met


def test_goal_reads_as_a_sign_and_a_number() -> None:
    assert str(Goal("<=", 40, " KiB")) == "≤ 40 KiB"
    assert str(Goal(">=", 1000)) == "≥ 1,000"


def test_no_value_is_not_measured_never_met() -> None:
    assert verdict(None, Goal("==", 0)) == "not measured"


def test_rows_give_each_target_its_figure_and_verdict() -> None:
    rows = {r["target"]: r for r in target_rows(sections())}
    assert rows["1,000 concurrent streams: errors"]["verdict"] == "met"
    assert rows["1,000 concurrent streams: chatd TTFT overhead p99"]["measured"] == 60
    assert rows["1,000 concurrent streams: chatd TTFT overhead p99"]["verdict"] == "not met"
    assert "peak 990 in flight" in rows["1,000 concurrent streams: errors"]["conditions"]
    assert rows["Capacity: 40 tokens/s streams per core of chatd"]["measured"] == 833
    assert rows["1,000 identical concurrent questions: upstream calls"]["verdict"] == "met"
    assert rows["Idle connections: chatd RSS per connection"]["verdict"] == "not met"
    assert rows["Soak: RSS growth, last checkpoint over first"]["measured"] == 12.0


def test_a_failed_or_missing_section_is_not_measured() -> None:
    rows = target_rows({"soak": {"failed": "RuntimeError: chatd exited"}})
    by_name = {r["target"]: r for r in rows}
    soak = by_name["Soak: RSS growth, last checkpoint over first"]
    assert (soak["verdict"], soak["conditions"]) == ("not measured", "failed: RuntimeError: "
                                                     "chatd exited")  # fmt: skip
    assert by_name["Cancel → upstream close p99"]["conditions"] == "did not run"
    assert {r["verdict"] for r in rows} == {"not measured"}


def test_report_has_the_targets_table_and_every_section() -> None:
    result = {
        "command": "python benchmarks/targets.py --quick", "mode": "quick", "elapsed_s": 90.0,
        "chatd": {"chatd_path": "/work/main", "git_head": "abc1234"},
        "section_seconds": {"streams": 10.0}, "targets": target_rows(sections()),
        "sections": {**sections(), "logging": {"failed": "OSError: boom"}},
        "plots": ["targets-ttft-quick.png"], "machine": {"cores": 2},
    }  # fmt: skip
    md = markdown(result)
    assert_contains(
        md,
        "| 1,000 concurrent streams: errors | = 0 | 0 | **met** |",
        "Quick run: every section is scaled down",
        "chatd from `/work/main` at git abc1234",
        "## Request logs on against off\n\nFailed: OSError: boom",
        "![targets-ttft-quick.png](targets-ttft-quick.png)",
    )
    assert md.count("\n## ") == 10  # eight sections, the plots, the machine


def flat(sizes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Each size by its path (``streams.users``), the sections' records flattened."""
    flattened: dict[str, Any] = {}
    for key, value in sizes.items():
        if isinstance(value, dict):
            flattened |= flat(value, f"{prefix}{key}.")
        else:
            flattened[prefix + key] = value
    return flattened


def test_quick_is_the_full_run_scaled_down() -> None:
    full, quick = flat(attrs.asdict(targets.FULL)), flat(attrs.asdict(targets.QUICK))
    assert quick.keys() == full.keys()
    assert all(quick[k] <= full[k] for k in full)
    assert full["streams.users"] == 1000 and full["idle_connections"] == 2000
    assert full["soak.checkpoints"] == (5_000, 50_000) and full["cancels.requests"] == 1000


def test_a_size_must_be_chosen() -> None:
    with pytest.raises(SystemExit):
        targets.parse_args([])
    assert targets.parse_args(["--quick", "--only", "soak"]).only == ["soak"]


def test_stream_errors_leave_out_the_client_librarys_own() -> None:
    streams = {**sections()["streams"]}
    streams["client_errors"] = {"connect:timeout": 3, "closed": 1, "lost:trio-websocket": 5}
    rows = {r["target"]: r for r in target_rows({"streams": streams})}
    assert rows["1,000 concurrent streams: errors"]["measured"] == 4
