"""Issue 6's targets, read off a ``targets.py`` result: goal, measured, met or not (pure).

A section that failed or did not run is *not measured*, never met; each row says under what
load its figure was taken (a quick run is scaled down, and says so).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["TARGETS", "Goal", "Target", "target_rows", "verdict"]

Op = Literal["<=", ">=", "=="]
Section = Mapping[str, Any]
OPS = {"<=": (operator.le, "≤"), ">=": (operator.ge, "≥"), "==": (operator.eq, "=")}


@attrs.frozen
class Goal:
    """``measured OP limit``, with the unit for people."""

    op: Op
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        return bool(OPS[self.op][0](value, self.limit))

    def __str__(self) -> str:
        return f"{OPS[self.op][1]} {self.limit:,g}{self.unit}"


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
    """Every error the users counted but ``lost:`` ones: trio-websocket failing our own close
    (see ``loadgen.users``) is the client's fault, and loses no request."""
    return float(sum(n for k, n in s["client_errors"].items() if not k.startswith("lost:")))


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


def _b_over_a(kind: str) -> Callable[[Section], float]:
    return lambda s: float(s["ratios_b_over_a"][kind]["ratio_of_medians"])


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
           lambda s: float(s["configs"]["on"]["waves"][0]["upstream_calls"]),
           lambda s: f"{s['n']} identical chats at once, flights and cache on"),
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
        section, value = sections.get(t.section), None
        if section is None:
            conditions = "did not run"
        elif "failed" in section:
            conditions = f"failed: {section['failed']}"
        else:
            value, conditions = t.value(section), t.conditions(section)
        row = {"target": t.name, "goal": str(t.goal), "measured": value, "unit": t.goal.unit}
        rows.append(row | {"conditions": conditions, "verdict": verdict(value, t.goal)})
    return rows
