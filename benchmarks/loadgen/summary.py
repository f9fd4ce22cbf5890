"""The figures of one run, from the users' records and the rig's readings (pure).

*chatd's overhead on TTFT* is client TTFT minus the simulator's floor for that request
(:func:`sim_floor_ms`; the report's ``OVERHEAD_NOTE`` explains it), over answers from the LLM
on the expected path (not cached, not cut short before a token).
"""

from __future__ import annotations

import collections
import functools
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from loadgen.pipeline_questions import floor_ms
from loadgen.pipeline_stats import latency_ms
from loadgen.scenarios import KINDS
from loadgen.users import Record

__all__ = ["outage_phases", "sim_floor_ms", "summarise"]


def sim_floor_ms(kind: str, message: str, ttft_ms: float, tokens_per_s: float) -> float:
    """The simulator's earliest first answer token for ``message`` of ``kind``: its ttft, and
    for Path A the router call's tool-call chunks (:func:`~loadgen.pipeline_questions.floor_ms`)
    then a ttft."""
    k = KINDS[kind]
    if k.sim_calls == 1:
        return ttft_ms
    _tool, router_ms = floor_ms(message, ttft_ms, tokens_per_s)
    return router_ms + (k.sim_calls - 1) * ttft_ms


def _answered(r: Record) -> bool:
    return r.terminal == "done" and r.finish_reason != "cancelled"


def _overheads(records: Sequence[Record], floor: Callable[[str, str], float]) -> list[float]:
    """Client TTFT minus the floor, ms, over answers from the LLM on the expected path."""
    return [
        r.ttft_s * 1000 - floor(r.kind, r.message)
        for r in records
        if r.ttft_s is not None
        and r.terminal == "done"
        and not r.cached
        and r.path == KINDS[r.kind].path
    ]


def _ttft(records: Iterable[Record]) -> dict[str, float | int]:
    # In ms before the figures are taken, as they always were: the same floats, rounded.
    return latency_ms((r.ttft_s * 1000 for r in records if r.ttft_s is not None), scale=1)


def summarise(
    records: Sequence[Record], wall_s: float, ttft_ms: float, tokens_per_s: float
) -> dict[str, Any]:
    """Counts, latencies and rates of one run's records over ``wall_s`` seconds."""

    @functools.cache
    def floor(kind: str, message: str) -> float:
        return sim_floor_ms(kind, message, ttft_ms, tokens_per_s)

    terminals = collections.Counter(r.terminal for r in records)
    codes = collections.Counter(r.code for r in records if r.terminal == "error")
    codes.update(r.terminal for r in records if r.terminal in ("closed", "client_timeout"))
    answered = [r for r in records if _answered(r)]
    tokens, frames = sum(r.tokens for r in records), sum(r.frames for r in records)
    by_kind = {}
    for kind in sorted({r.kind for r in records}):
        mine = [r for r in records if r.kind == kind]
        by_kind[kind] = {
            "requests": len(mine),
            "answered": sum(map(_answered, mine)),
            "client_ttft": _ttft(mine),
            "overhead": latency_ms(_overheads(mine, floor), scale=1),
            "sim_floor_ms": round(statistics.median(floor(r.kind, r.message) for r in mine), 1),
        }
    wall = max(wall_s, 1e-9)
    server_ttft = (r.server_ttft_ms for r in records if r.server_ttft_ms is not None)
    return {
        "requests": len(records),
        "answered": len(answered),
        "cancelled": sum(r.finish_reason == "cancelled" for r in records),
        "dropped": terminals["dropped"],
        "terminals": dict(terminals),
        "errors_by_code": dict(codes),
        "actions": dict(collections.Counter(r.action for r in records if r.action)),
        "shared": sum(r.shared for r in records),
        "cached": sum(r.cached for r in records),
        "wrong_path": sum(r.path != KINDS[r.kind].path for r in answered),
        "client_ttft": _ttft(records),
        "server_ttft": latency_ms(server_ttft, scale=1),
        "overhead": latency_ms(_overheads(records, floor), scale=1),
        "by_kind": by_kind,
        "tokens": tokens,
        "frames": frames,
        "token_frames": sum(r.token_frames for r in records),
        "answer_chars": sum(r.chars for r in records),
        "wall_s": round(wall_s, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "frames_per_s": round(frames / wall, 1),
    }


def outage_phases(records: Sequence[Record], marks: Mapping[str, float]) -> dict[str, Any]:
    """Terminals by phase (sent before, during, after the fault) and the breaker's recovery.

    The first request answered after the fault is the breaker's half-open probe (or follows
    it): ``recovery_s`` runs from the fault's end to its send; requests refused while it was
    in flight are ``refused_while_probing``; it *recovered* if nothing sent after it failed.
    """
    on, off = marks.get("fault_on_s"), marks.get("fault_off_s")
    if on is None or off is None:
        return {"skipped": "the fault was not switched on and off within the run"}
    phases: dict[str, collections.Counter[str]] = {
        p: collections.Counter() for p in ("before", "during", "after")
    }
    for r in records:
        phase = "before" if r.sent_s < on else "during" if r.sent_s < off else "after"
        phases[phase][r.code or r.finish_reason or r.terminal] += 1
    result = {
        "fault_on_s": round(on, 2),
        "fault_off_s": round(off, 2),
        "phases": {p: dict(c) for p, c in phases.items()},
    }
    after = sorted((r for r in records if r.sent_s >= off), key=lambda r: r.sent_s)
    first_ok = next((r for r in after if _answered(r)), None)
    if first_ok is None:
        recovery = ("recovery_s", "probe_s", "refused_while_probing", "failed_after_recovery")
        return result | dict.fromkeys(recovery) | {"recovered": False}
    probe_s = first_ok.duration_s or 0.0
    failed = [r for r in after if r.terminal != "done" and r.sent_s > first_ok.sent_s]
    later = sum(r.sent_s >= first_ok.sent_s + probe_s for r in failed)
    return result | {
        "recovery_s": round(first_ok.sent_s - off, 2),
        "probe_s": round(probe_s, 2),
        "refused_while_probing": len(failed) - later,
        "failed_after_recovery": later,
        "recovered": later == 0,
    }
