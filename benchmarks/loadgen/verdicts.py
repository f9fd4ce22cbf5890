"""Issue 6's targets, read off a ``targets.py`` result: goal, measured, met or not (pure).

Each :class:`Goal` is a comparison with the issue's number; :func:`target_rows`
finds the measured figure in the result's sections, says under what load it
was measured (a quick run is scaled down, and says so) and gives the verdict.
A section that failed or did not run is *not measured*, never met.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["TARGETS", "Goal", "Target", "target_rows", "verdict"]

Op = Literal["<=", ">=", "=="]
Section = Mapping[str, Any]


@attrs.frozen
class Goal:
    """``measured OP limit``, with the unit for people."""

    op: Op
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def __str__(self) -> str:
        sign = {"<=": "≤", ">=": "≥", "==": "="}[self.op]
        return f"{sign} {self.limit:,g}{self.unit}"


def verdict(value: float | None, goal: Goal) -> str:
    """``met``, ``not met``, or ``not measured`` when there is no value."""
    if value is None:
        return "not measured"
    return "met" if goal.met(value) else "not met"


@attrs.frozen
class Target:
    """One of the issue's targets: where its figure is and under what load it was taken."""

    name: str
    section: str
    goal: Goal
    value: Callable[[Section], float | None]
    conditions: Callable[[Section], str]


def _streams_errors(s: Section) -> float:
    """Everything the users counted as an error (refused or timed-out connections and
    requests included) but ``lost:`` ones: trio-websocket failing our own close
    (see ``loadgen.users``) is the client's fault, and loses no request."""
    return float(sum(n for k, n in s["client_errors"].items() if not k.startswith("lost:")))


def _storm_calls(s: Section) -> float:
    return float(s["configs"]["on"]["waves"][0]["upstream_calls"])


def _b_over_a(kind: str) -> Callable[[Section], float]:
    return lambda s: float(s["ratios_b_over_a"][kind]["ratio_of_medians"])


def _streams_at(s: Section) -> str:
    peak = max((x["in_flight"] for x in s["samples"]), default=0)
    return (
        f"{s['users']} users back to back (peak {peak} in flight), ttft {s['ttft_ms']:g} ms, "
        f"{s['tokens_per_s_each']:g} tokens/s, {s['requests']} requests"
    )


def _floor_at(s: Section) -> str:
    return (
        f"{s['users']} streams of {s['tokens_per_s_each']:g} tokens/s, {s['rounds']} "
        f"round(s) of {s['duration_s']:g} s each"
    )


TARGETS: tuple[Target, ...] = (
    Target("1,000 concurrent streams: errors", "streams", Goal("==", 0), _streams_errors,
           _streams_at),
    Target("1,000 concurrent streams: chatd TTFT overhead p99", "streams", Goal("<=", 50, " ms"),
           lambda s: s["overhead"].get("p99_ms"), _streams_at),
    Target("Capacity: 40 tokens/s streams per core of chatd", "floor", Goal(">=", 1000),
           lambda s: s["chatd_capacity"]["streams_per_core"], _floor_at),
    Target("chatd CPU per token ÷ the bare relay's", "floor", Goal("<=", 2, "x"),
           lambda s: s["chatd_over_relay"], _floor_at),
    Target("1,000 identical concurrent questions: upstream calls", "storm", Goal("==", 1),
           _storm_calls, lambda s: f"{s['n']} identical chats at once, flights and cache on"),
    Target("Path B TTFT ÷ Path A (calculator), medians", "paths", Goal("<=", 0.5, "x"),
           _b_over_a("tools_calculator"), lambda s: f"{s['rounds']} rounds, unloaded"),
    Target("Path B TTFT ÷ Path A (unsure FAQ), medians", "paths", Goal("<=", 0.5, "x"),
           _b_over_a("tools_faq_unsure"), lambda s: f"{s['rounds']} rounds, unloaded"),
    Target("Cancel → upstream close p99", "cancels", Goal("<=", 50, " ms"),
           lambda s: s["cancel_to_close"].get("p99_ms"),
           lambda s: f"{s['cancel_to_close']['cancels']} random cancels, "
                     f"{s['users']} users"),
    Target("Idle connections: chatd RSS per connection", "idle", Goal("<=", 40, " KiB"),
           lambda s: s["chatd"]["delta_kib_per_connection"],
           lambda s: f"{s['chatd']['connections']} idle WebSockets"),
    Target("Soak: RSS growth, last checkpoint over first", "soak", Goal("<=", 10, "%"),
           lambda s: round(s["growth"] * 100, 1),
           lambda s: " vs ".join(f"{c['requests']:,}" for c in s["checkpoints"])
                     + f" requests ({s['scenario']})"),
)  # fmt: skip


def target_rows(sections: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per target: name, goal, measured value, conditions, verdict."""
    rows = []
    for t in TARGETS:
        section = sections.get(t.section)
        value: float | None = None
        conditions = "did not run"
        if section is not None and "failed" in section:
            conditions = f"failed: {section['failed']}"
        elif section is not None:
            value = t.value(section)
            conditions = t.conditions(section)
        rows.append(
            {
                "target": t.name,
                "goal": str(t.goal),
                "measured": value,
                "unit": t.goal.unit,
                "conditions": conditions,
                "verdict": verdict(value, t.goal),
            }
        )
    return rows
