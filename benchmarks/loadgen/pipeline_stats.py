"""Nearest-rank percentiles, and the summary in ms of a list of durations.

The scenarios and the other ``loadgen`` modules import :func:`percentile` from here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence

__all__ = ["LATENCY_FIGURES", "PIPELINE_FIGURES", "latency_ms", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


LATENCY_FIGURES: dict[str, Callable[[Sequence[float]], float]] = {
    "p50": statistics.median,
    "p95": lambda values: percentile(values, 95),
    "p99": lambda values: percentile(values, 99),
    "p99_9": lambda values: percentile(values, 99.9),
    "min": min,
    "max": max,
    "mean": statistics.fmean,
}
"""What :func:`latency_ms` can report, by the name its key starts with (all of them: the
resilience scenario's)."""

PIPELINE_FIGURES = ("p50", "p95", "min", "max")
"""The figures of the pipeline scenario's durations."""


def latency_ms(
    values: Iterable[float],
    figures: Iterable[str] = ("p50", "p95", "p99", "max"),
    digits: int = 1,
    scale: float = 1000.0,
) -> dict[str, float | int]:
    """``n`` and ``figures`` (``p50_ms`` and so on, of :data:`LATENCY_FIGURES`) of
    ``values``, each taken of the values as given then times ``scale`` (1000 for seconds, 1
    for ms), rounded to ``digits``; only ``n`` of nothing."""
    values = list(values)
    if not values:
        return {"n": 0}
    by_name = {name: LATENCY_FIGURES[name](values) for name in figures}
    return {"n": len(values)} | {f"{k}_ms": round(v * scale, digits) for k, v in by_name.items()}
