"""The Markdown report and the command line's plan (benchmarks/loadgen/report.py, load.py)."""

from __future__ import annotations

from typing import Any

import load
from loadgen.report import markdown
from loadgen.scenarios import SCENARIOS
from loadgen.summary import outage_phases, summarise
from loadgen.users import Record

from tests.benchmarks.snippets import assert_contains


def scenario_result(name: str, records: list[Record]) -> dict[str, Any]:
    """A scenario's figures as the runner makes them, without running anything."""
    result = summarise(records, 1.0, 300, 40)
    result.update(
        scenario=name, description=SCENARIOS[name].description,
        chatd_env=dict(SCENARIOS[name].chatd_env), chatd_cpu_s=0.2, sim_cpu_s=0.1,
        client_cpu_s=0.1, machine_cores_busy=0.5, chatd_cpu_busy=0.2,
        chatd_cpu_s_per_1k_tokens=None if not result["tokens"] else 5.0,
        chatd_cpu_ms_per_request=1.5,
        chatd_rss_kib={"start": 61440, "peak": 65536, "end": 63488}, upstream_calls=2,
        upstream_calls_per_answered=1.0, sim_client_disconnects=0,
    )  # fmt: skip
    return result


def test_markdown_has_a_row_per_scenario_and_the_outage_verdict() -> None:
    ok = Record("chitchat", "m", 0, 2.5, terminal="done", finish_reason="stop",
                path="direct", ttft_s=0.305, tokens=40)  # fmt: skip
    faq = Record("faq", "m", 0, 0.0, terminal="done", finish_reason="stop",
                 path="tool_stream", ttft_s=0.302)  # fmt: skip
    outage = scenario_result("outage", [ok])
    outage["outage"] = outage_phases([ok], {"fault_on_s": 1.0, "fault_off_s": 2.0})
    result = {
        "command": "python benchmarks/load.py --quick",
        "elapsed_s": 1.0,
        "plan": {
            "users": 3,
            "duration_s": 2.0,
            "ramp_s": 0.5,
            "think_s": 0.1,
            "max_requests": None,
            "ttft_ms": 300.0,
            "tokens_per_s": 40.0,
        },
        "scenarios": [scenario_result("faq", [faq]), outage],
        "machine": {"cpu": "test"},
    }
    assert_contains(
        markdown(result),
        "| faq | 3 | 1 | 1 | none | 302 / 302 / 302 |",
        "| – | 1.5 |",  # no LLM tokens in a Path B answer
        "| 60 / 64 / 62 |",  # RSS in MiB
        "CHATD_BREAKERS_LLM_OPEN_TIMEOUT_S 1",
        "recovered: **True**",
        "- cpu: test",
    )


def test_quick_runs_every_scenario_small() -> None:
    names, plan, name = load.plan_from(load.parse_args(["--quick", "--quiet"]))
    assert names == list(SCENARIOS)
    assert (plan.users, plan.duration_s, name) == (20, 3.5, "quick")
    assert plan.ramp_s <= plan.duration_s / 2


def test_default_names_the_results_by_scenario_and_users() -> None:
    names, plan, name = load.plan_from(load.parse_args(["--users", "200", "--quiet"]))
    assert (names, plan.users, name) == (["mix"], 200, "mix-200u")
