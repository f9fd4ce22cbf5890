"""Percentiles, the TTFT floor and the per-run figures (benchmarks/loadgen/summary.py)."""

from __future__ import annotations

from typing import Any

from loadgen.pipeline_stats import LATENCY_FIGURES, PIPELINE_FIGURES, latency_ms
from loadgen.summary import outage_phases, sim_floor_ms, summarise
from loadgen.users import Record


def done(kind: str = "chitchat", ttft_s: float = 0.31, **fields: Any) -> Record:
    fields.setdefault("path", {"faq": "tool_stream", "tools": "tools"}.get(kind, "direct"))
    fields.setdefault("finish_reason", "stop")
    return Record(kind, "tell me a joke", 0, fields.pop("sent_s", 0.0), terminal="done",
                  ttft_s=ttft_s, **fields)  # fmt: skip


def error(code: str, sent_s: float = 0.0) -> Record:
    return Record("chitchat", "m", 0, sent_s, terminal="error", code=code)


def test_latency_is_nearest_rank_in_ms() -> None:
    """1..100 ms: p50 is the median, p95 and p99 the 95th and 99th values."""
    summary = latency_ms(v / 1000 for v in range(1, 101))
    assert summary == {"n": 100, "p50_ms": 50.5, "p95_ms": 95, "p99_ms": 99, "max_ms": 100}


def test_latency_of_nothing_is_empty() -> None:
    assert latency_ms([]) == {"n": 0}


def test_latency_figures_come_in_the_order_asked_to_the_digits_asked() -> None:
    seconds = [0.0012345, 0.0023456, 0.0034567]
    summary = latency_ms(seconds, PIPELINE_FIGURES)
    assert summary == {"n": 3, "p50_ms": 2.3, "p95_ms": 3.5, "min_ms": 1.2, "max_ms": 3.5}
    every = latency_ms(seconds, LATENCY_FIGURES, digits=3)
    assert list(every) == ["n", *(f"{name}_ms" for name in LATENCY_FIGURES)]
    assert list(LATENCY_FIGURES) == ["p50", "p95", "p99", "p99_9", "min", "max", "mean"]
    assert every["mean_ms"] == 2.346
    assert latency_ms([12.34, 56.78], scale=1)["p50_ms"] == 34.6


def test_floor_is_one_ttft_for_direct_and_path_b() -> None:
    assert sim_floor_ms("chitchat", "hi there", 300, 40) == 300
    assert sim_floor_ms("faq", "as am Where is my order?", 300, 40) == 300


def test_floor_of_path_a_adds_argument_streaming_and_a_second_ttft() -> None:
    """``what is 2*(0+7)?``: a head and three 8-character argument pieces at 40/s."""
    # {"expression":"2*(0+7)"} is 24 bytes: 3 pieces, so 4 units, 3 intervals of 25 ms.
    assert sim_floor_ms("tools", "what is 2*(0+7)?", 300, 40) == 300 + 75 + 300


def test_summary_counts_terminals_errors_and_rates() -> None:
    records = [
        done(tokens=40, frames=10, token_frames=8, chars=100),
        done(
            tokens=20,
            frames=6,
            token_frames=4,
            chars=50,
            finish_reason="cancelled",
            action="cancel",
        ),
        done(ttft_s=0.001, cached=True, tokens=0, frames=3),
        error("upstream_unavailable"),
        Record("chitchat", "m", 0, 0.0, terminal="dropped", action="drop"),
        Record("chitchat", "m", 0, 0.0, terminal="closed"),
    ]
    s = summarise(records, wall_s=2.0, ttft_ms=300, tokens_per_s=40)
    assert (s["requests"], s["answered"], s["cancelled"], s["dropped"]) == (6, 2, 1, 1)
    assert s["errors_by_code"] == {"upstream_unavailable": 1, "closed": 1}
    assert s["actions"] == {"cancel": 1, "drop": 1}
    assert (s["tokens"], s["tokens_per_s"], s["frames_per_s"]) == (60, 30.0, 9.5)
    assert s["cached"] == 1
    # The cached answer is left out of the overhead: two samples of 10 ms.
    assert s["overhead"]["n"] == 2
    assert s["overhead"]["p50_ms"] == 10.0


def test_wrong_path_is_counted_and_left_out_of_the_overhead() -> None:
    s = summarise([done("faq", path="tools"), done("faq")], 1.0, 300, 40)
    assert s["wrong_path"] == 1
    assert s["overhead"]["n"] == 1


def test_outage_recovery_is_measured_from_the_fault_end() -> None:
    records = [
        done(sent_s=0.5),
        error("upstream_unavailable", 1.5),
        error("upstream_unavailable", 2.2),
        done(sent_s=2.9),
        done(sent_s=3.5),
    ]
    o = outage_phases(records, {"fault_on_s": 1.0, "fault_off_s": 2.0})
    assert o["phases"] == {
        "before": {"stop": 1},
        "during": {"upstream_unavailable": 1},
        "after": {"upstream_unavailable": 1, "stop": 2},
    }
    assert o["recovery_s"] == 0.9
    assert o["failed_after_recovery"] == 0
    assert o["recovered"] is True


def test_refusals_while_the_probe_runs_are_apart_from_failures_after_it() -> None:
    """The probe answered 2.1 → 3.1 s: a refusal at 2.5 s is half-open, one at 3.5 s is not."""
    records = [
        done(sent_s=2.1, duration_s=1.0),
        error("upstream_unavailable", 2.5),
        error("upstream_unavailable", 3.5),
    ]
    o = outage_phases(records, {"fault_on_s": 1.0, "fault_off_s": 2.0})
    assert (o["probe_s"], o["refused_while_probing"], o["failed_after_recovery"]) == (1.0, 1, 1)
    assert o["recovered"] is False


def test_outage_without_an_answer_after_it_did_not_recover() -> None:
    o = outage_phases([error("upstream_unavailable", 2.5)], {"fault_on_s": 1, "fault_off_s": 2})
    assert (o["recovery_s"], o["recovered"]) == (None, False)
