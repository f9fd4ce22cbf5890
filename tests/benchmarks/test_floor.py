"""CPU per token against the relay, and the capacity it implies (benchmarks/loadgen/floor.py)."""

from __future__ import annotations

from typing import Any

from loadgen.floor import capacity, per_token
from loadgen.plots import rates


def run(cpu_s: float, tokens: int, **errors: int) -> dict[str, Any]:
    return {
        "requests": 10, "answered": 10, "errors_by_code": errors, "tokens": tokens,
        "token_frames": tokens // 2, "chatd_cpu_s": cpu_s, "wall_s": 2.0,
        "overhead": {"p99_ms": 5.0}, "machine_cores_busy": 1.0,
    }  # fmt: skip


def test_per_token_sums_the_runs() -> None:
    figures = per_token([run(0.5, 5000), run(1.5, 5000, overloaded=2)])
    assert figures["us_per_token"] == 200.0
    assert figures["us_per_token_by_run"] == [100.0, 300.0]
    assert figures["errors_by_code"] == {"overloaded": 2}
    assert figures["tokens_per_token_frame"] == 2.0
    assert figures["cpu_busy"] == 0.5


def test_capacity_is_one_core_over_cpu_per_token() -> None:
    assert capacity(25.0, 40) == {"tokens_per_s_per_core": 40_000, "streams_per_core": 1000}
    assert capacity(100.0, 40) == {"tokens_per_s_per_core": 10_000, "streams_per_core": 250}


def test_rates_are_per_second_between_samples() -> None:
    samples = [{"t_s": 0.0, "tokens": 0}, {"t_s": 1.0, "tokens": 500}, {"t_s": 3.0, "tokens": 900}]
    assert rates(samples, "tokens") == ([0.5, 2.0], [500.0, 200.0])
