"""The abuse benchmark's pure parts: its rules file, /proc and /metrics readings, verdicts
and report (benchmarks/bench_abuse.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import attrs
import orjson
from bench_abuse import fairness_verdict, params_from, slow_reader_verdict
from loadgen.abuse_fairness import overhead_summary, ratio
from loadgen.abuse_rig import in_flight, metric_samples
from loadgen.abuse_slow_readers import WARM_UP, long_answer_rules, long_question, tcp_queues
from reports.abuse import markdown

from chatd.llm.sim import TextPlan, load_rules, plan_reply, tokenize
from tests.benchmarks.snippets import assert_contains


def test_the_rules_answer_long_except_the_warm_up(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(long_answer_rules(20_000, "abc")))
    rules = load_rules(path)

    def answer(message: str) -> str:
        body = {"messages": [{"role": "user", "content": message}]}
        plan = plan_reply(body, rules)
        assert isinstance(plan, TextPlan)
        return plan.text

    long = answer(long_question(7))
    assert len(tokenize(long)) == 20_000
    assert len(long) == 20_000 * 4 - 1
    assert answer(WARM_UP + " again") == "ok"


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:1F90 0100007F:D431 01 00001000:00000010 00:00000000 00000000     0
   2: 0100007F:D431 0100007F:1F90 01 00000002:00000300 00:00000000 00000000     0
   3: 0100007F:1F90 0100007F:D432 06 00000500:00000000 00:00000000 00000000     0
   4: 0100007F:0050 0100007F:D433 01 00000400:00000000 00:00000000 00000000     0
"""


def test_tcp_queues_sum_both_sides_of_established_connections_only() -> None:
    assert tcp_queues([TCP], 0x1F90) == {
        "connections": 1,
        "server_unsent": 0x1000,
        "server_unread": 0x10,
        "client_unsent": 2,
        "client_unread": 0x300,
    }


METRICS = """\
# HELP chatd_limiter_in_use Limiter slots held.
# TYPE chatd_limiter_in_use gauge
chatd_limiter_in_use{limiter="prepare"} 0.0
chatd_limiter_in_use{limiter="llm_streams"} 40.0
# HELP chatd_queue_depth Requests waiting for a slot.
# TYPE chatd_queue_depth gauge
chatd_queue_depth 100.0
# HELP chatd_requests_in_flight Requests, by state.
# TYPE chatd_requests_in_flight gauge
chatd_requests_in_flight{state="queued"} 100.0
chatd_requests_in_flight{state="streaming"} 40.0
"""


def test_metric_samples_keep_labels_and_in_flight_sums_the_states() -> None:
    samples = metric_samples(METRICS)
    assert samples['chatd_limiter_in_use{limiter="llm_streams"}'] == 40
    assert samples["chatd_queue_depth"] == 100
    assert in_flight(samples) == 140


def test_overhead_summary_and_ratio() -> None:
    summary = overhead_summary([float(ms) for ms in range(1, 21)])
    assert summary == {"n": 20, "p50_ms": 10.5, "p90_ms": 18.0, "min_ms": 1.0, "max_ms": 20.0}
    assert overhead_summary([])["p50_ms"] is None
    assert ratio(30.0, 10.0) == 3.0
    assert ratio(30.0, None) is None


def sample(t_s: float, rss_kib: int, active: int, completed: int) -> dict[str, Any]:
    queues = dict.fromkeys(
        ("connections", "server_unsent", "server_unread", "client_unsent", "client_unread"), 0
    )
    sim = {"requests": 192, "active": active, "completed": completed, "client_disconnects": 0}
    return {"t_s": t_s, "rss_kib": rss_kib, "sim": sim, "upstream": queues, "downstream": queues,
            "requests_in_flight": 192, "connections": 3, "reaps": 0}  # fmt: skip


def slow_result(peak_kib: int, active: int, completed: int, t_s: float = 30.0) -> dict[str, Any]:
    window = {**sample(t_s, peak_kib, active, completed), "peak_rss_kib": peak_kib}
    after = {**sample(45.0, peak_kib, 0, completed), "settled_s": 0.1,
             "rss_kib_2s_later": peak_kib}  # fmt: skip
    return {
        "chats": 192, "rss_baseline_kib": 60_000, "window": window, "peak_rss_kib": peak_kib,
        "peak_rss_hwm_kib": peak_kib, "samples": [sample(1.0, 61_000, 64, 0), window],
        "watched_s": 45.0, "chatd_cores_busy": 0.3, "sim_cores_busy": 0.2,
        "after_close": after, "requests_by_outcome": {'{outcome="cancelled"}': 192},
        "check_after": {"terminal": "done", "ttft_ms": 30.0}, "chatd_log_warnings": {},
        "word": "ok", "answer_chars": 59_999,
    }  # fmt: skip


PARAMS = attrs.asdict(params_from(argparse.Namespace(quick=False, window_s=None, b_chats=None)))


def test_slow_readers_pass_only_with_little_growth_and_nothing_read_to_the_end() -> None:
    met, line = slow_reader_verdict(slow_result(100_000, 192, 0), PARAMS)
    assert met
    assert "growth **41.0 MB**" in line
    assert "192 still open (paused:" in line
    met, line = slow_reader_verdict(slow_result(300_000, 0, 192), PARAMS)
    assert not met
    assert "**192 were read to the end**" in line
    assert not slow_reader_verdict(slow_result(120_000, 192, 0), PARAMS)[0]  # 61.4 MB


def test_a_window_shorter_than_two_answers_cannot_tell_paused_from_streaming() -> None:
    met, line = slow_reader_verdict(slow_result(61_000, 192, 0, t_s=8.0), PARAMS)
    assert not met
    assert "too short to tell" in line


def phase(name: str, p50: float, p90: float, queue_p50: float = 0.0) -> dict[str, Any]:
    def summary(a: float, b: float) -> dict[str, Any]:
        return {"n": 20, "p50_ms": a, "p90_ms": b, "min_ms": a, "max_ms": b}

    return {"name": name, "chats": 20, "done": 20, "errors": {}, "cached_or_shared": 0,
            "client_overhead": summary(p50, p90), "server_overhead": summary(p50 - 1, p90 - 1),
            "queue": summary(queue_p50, queue_p50), "llm_streams_in_use": {"min": 40, "median": 40},
            "queued": {"min": 90, "median": 100, "max": 100}, "wall_s": 30.0,
            "cores_busy": {"machine": 1.5, "chatd": 0.5, "sim": 0.1},
            "records": [{"client_ttft_ms": 300 + p50, "queue_ms": queue_p50}]}  # fmt: skip


def fair_result(loaded_p50: float, loaded_p90: float) -> dict[str, Any]:
    phases = {"unloaded": phase("unloaded", 5.0, 8.0),
              "loaded": phase("loaded", loaded_p50, loaded_p90, 100.0),
              "unloaded-after": phase("unloaded-after", 6.0, 9.0)}  # fmt: skip
    return {
        "phases": phases,
        "flood": {"sent": 5000, "done": 700, "error:overloaded": 4000, "elapsed_s": 30.0,
                  "cpu_s": 5.0, "done_per_s": 23.3},
        "ramp_s": 0.1, "idle_after_flood_s": 0.2,
        "ratio_p50": ratio(loaded_p50, 5.0), "ratio_p90": ratio(loaded_p90, 8.0),
        "chatd_log_warnings": {},
    }  # fmt: skip


def test_fairness_holds_at_twice_the_unloaded_overhead_and_no_more() -> None:
    met, line = fairness_verdict(fair_result(10.0, 16.0))
    assert met
    assert "(**2.0x / 2.0x**)" in line
    met, line = fairness_verdict(fair_result(150.0, 16.0))
    assert not met
    assert "**150.0 / 16.0 ms** under the flood" in line


def test_markdown_has_both_figures_the_variant_and_the_machine() -> None:
    slow, fair = slow_result(300_000, 0, 192), fair_result(150.0, 180.0)
    result = {
        "command": "python benchmarks/bench_abuse.py", "elapsed_s": 200.0, "params": PARAMS,
        "chatd": {"chatd_path": "/x", "git_head": "abc1234"}, "slow_readers": slow,
        "slow_readers_variant": {**slow_result(280_000, 0, 192), "word": "abc",
                                 "answer_chars": 79_999},
        "fairness": fair, "loadavg_at_end": [1.0, 1.0, 1.0],
        "machine": {"cpu": "test", "nproc": 2, "loadavg_at_start": [1.0, 1.0, 1.0]},
        "verdicts": [slow_reader_verdict(slow, PARAMS)[1], fairness_verdict(fair)[1]],
    }  # fmt: skip
    assert_contains(
        markdown(result),
        "at git abc1234",
        "| 30 | 307.2 | 245.8 | 192 | 0 | 192 | 0 | 0.0 | 0.0 | 192 | 3 | 0 |",
        "~64 bytes per token read, for 3.0 bytes of text per token",
        "### The same with `abc` for a token",
        "| loaded | 20 / 20 | **150.0 / 180.0** |",
        "refused or failed: {'overloaded': 4000}",
        "~86 ms for two at A's rate; a first-come queue 100 deep would have kept it ~4.3 s",
        "- cpu: test",
    )
    result["slow_readers_variant"] = None
    assert "### The same" not in markdown(result)
