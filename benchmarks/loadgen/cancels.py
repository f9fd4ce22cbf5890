"""Cancel to upstream close: from a ``cancel`` frame to the LLM connection closing.

The users stamp ``time.monotonic()`` just before each ``cancel`` (``Record.abort_at``);
``closewatch.py``, between chatd and the simulator, stamps the same clock when chatd closes an
upstream connection and names the last request's user message on it. Messages are unique, so a
cancel's close is chatd's first close for its message at or after the stamp; with none, the
cancel is *no close seen* (the answer may have ended first), or *closed before* if chatd
closed one before the stamp.
"""

from __future__ import annotations

import bisect
import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.pipeline_stats import latency_ms
from loadgen.rig import Rig
from loadgen.users import Record

__all__ = ["cancel_to_close", "match_closes", "read_closes"]


def read_closes(log: Path) -> list[dict[str, Any]]:
    """The ``closed`` lines of a closewatch log."""
    lines = log.read_text(errors="replace").splitlines()
    records = (json.loads(line) for line in lines if line.startswith("{"))
    return [r for r in records if r.get("event") == "closed"]


def match_closes(
    aborts: Iterable[tuple[str, float]], closes: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Seconds from each (message, abort time) to chatd's next close of that message's
    upstream connection, and the cancels with none after or one before."""
    by_message: dict[str, list[float]] = collections.defaultdict(list)
    for close in closes:
        if close.get("by") == "client" and close.get("message") is not None:
            by_message[close["message"]].append(float(close["at"]))
    for times in by_message.values():
        times.sort()
    delays: list[float] = []
    unseen = before = 0
    for message, at in aborts:
        times = by_message.get(message, [])
        i = bisect.bisect_left(times, at)
        if i < len(times):
            delays.append(times[i] - at)
        elif times:
            before += 1
        else:
            unseen += 1
    return {"delays_s": delays, "no_close_seen": unseen, "closed_before": before}


def cancel_to_close(rig: Rig, records: Sequence[Record]) -> dict[str, Any]:
    """The figures for a run's cancels (a ``finish`` hook of ``run_scenario``)."""
    if rig.closewatch is None:
        raise ValueError("the rig has no close watcher: start it with watch_closes=True")
    cancels = [
        (r.message, r.abort_at) for r in records if r.action == "cancel" and r.abort_at is not None
    ]
    matched = match_closes(cancels, read_closes(rig.closewatch.log_path))
    delays_ms = [d * 1000 for d in matched.pop("delays_s")]
    return {
        "cancel_to_close": {
            "cancels": len(cancels),
            "closes_matched": len(delays_ms),
            **matched,
            **latency_ms(delays_ms, scale=1),
            "delays_ms": [round(d, 2) for d in delays_ms],
        }
    }
