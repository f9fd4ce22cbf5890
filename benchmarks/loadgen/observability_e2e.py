"""Part 1 of ``bench_observability.py``: the load rounds end to end, and their figures.

Every connection asks its questions one after another, the paths in turn, each question asked
once only; a round's chatd CPU and log growth are divided by the requests answered. Also the
profile of a configuration under load (the share of its samples in structlog calls and the
like), and the shape of a log file (lines and bytes per request by path).
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import WebSocketConnection

from loadgen import profiling
from loadgen.chat import Replies, ask, open_connections, sum_over_connections
from loadgen.cpu import SPENT_KEYS, Usage, busy_shares
from loadgen.observability_processes import Config, cpu_clock, read_from
from loadgen.pipeline_questions import PATH_B, unique_chit_chat, unique_question
from loadgen.pipeline_stats import percentile
from loadgen.processes import Process, proc_stat

__all__ = [
    "PATHS",
    "PROFILE_AREAS",
    "Measured",
    "Params",
    "log_shape",
    "measure_end_to_end",
    "question",
]

PATHS = ("direct", "tools", "tool_stream")
FAQ_QUESTION = PATH_B[1]  # answered confidently by the FAQ: Path B


@attrs.frozen(kw_only=True)
class Params:
    """What one run does."""

    quick: bool
    connections: int
    chats_per_connection: int
    rounds: int
    sim_ttft_ms: float = 20.0
    sim_tokens_per_s: float = 500.0
    include_text: bool
    control: bool
    profile: bool
    profile_rounds: int
    micro_requests: int
    micro_repeats: int
    metrics_calls: int


def question(path: str, n: int) -> str:
    """The ``n``-th question (never asked before) that takes ``path``."""
    if path == "direct":
        return unique_chit_chat(n)
    if path == "tools":
        return f"what is {n + 11}*{n % 89 + 3}?"
    # Two filler prefixes, both stop words of the FAQ search: 625 * 625 texts.
    return unique_question(n // 625, unique_question(n % 625, FAQ_QUESTION))


@attrs.define
class RoundTotals(Replies):
    """What the client saw over one round against one chatd, and what went wrong."""

    problems: list[str] = attrs.field(factory=list)
    """Errors, and answers on another path than expected or cached or shared."""


async def ask_questions(
    ws: WebSocketConnection, index: int, round_no: int, params: Params, totals: RoundTotals
) -> None:
    """One connection's questions of a round, one after another, the paths in turn."""
    chats = params.chats_per_connection
    for k in range(chats):
        path = PATHS[(index + k) % len(PATHS)]
        message = question(path, ((round_no + 1) * params.connections + index) * chats + k)
        reply = await ask(ws, f"r{round_no}-{k}", message)
        totals.add(reply)
        event = reply.terminal
        reused = event.get("cached") or event.get("shared")
        if event["type"] == "error" or event.get("path") != path or reused:
            totals.problems.append(f"{message!r} (expected {path}): {event}")


async def load_round(
    sockets: Sequence[WebSocketConnection], round_no: int, params: Params
) -> RoundTotals:
    """One round: every connection's questions, the connections side by side."""
    return await sum_over_connections(
        sockets, ask_questions, round_no, params, totals=RoundTotals()
    )


@attrs.define
class Measured:
    """One configuration's chatd, its connections and its measured rounds."""

    config: Config
    process: Process
    clock: int = attrs.field(init=False)
    sockets: Sequence[WebSocketConnection] = ()
    rounds: list[dict[str, Any]] = attrs.field(factory=list)
    durations: list[float] = attrs.field(factory=list)
    idle_cpu_s_per_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.clock = cpu_clock(self.process.pid)

    def cpu_seconds(self) -> float:
        """chatd's utime + stime so far, to the nanosecond."""
        return time.clock_gettime(self.clock)

    def user_system_seconds(self) -> tuple[float, float]:
        """utime and stime apart, from /proc/PID/stat (in 10 ms ticks)."""
        fields = proc_stat(self.process.pid)
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick


async def measured_round(m: Measured, sim: Process, round_no: int, params: Params) -> None:
    """One round against ``m``'s chatd: CPU, log growth and what came back."""
    offset = m.config.log_file.stat().st_size if m.config.log_file.exists() else 0
    user0, system0 = m.user_system_seconds()
    usage = Usage(m, sim)
    usage.start()
    totals = await load_round(m.sockets, round_no, params)
    spent = usage.stop()
    user, system = m.user_system_seconds()
    written = read_from(m.config.log_file, offset)
    if totals.problems:
        raise RuntimeError(
            f"{m.config.label}: {len(totals.problems)} request(s) failed, took the wrong "
            "path or were cached or shared:\n" + "\n".join(totals.problems[:5])
        )
    m.durations.extend(totals.durations)
    m.rounds.append(
        {
            "round": round_no,
            "requests": totals.answers,
            "by_path": dict(totals.paths),
            "wall_s": round(spent["wall_s"], 3),
            "chatd_cpu_s": round(spent["chatd_cpu_s"], 6),
            "chatd_utime_s": round(user - user0, 2),
            "chatd_stime_s": round(system - system0, 2),
            "chatd_cpu_us_per_request": round(
                spent["chatd_cpu_s"] / max(1, totals.answers) * 1e6, 1
            ),
            "log_bytes": len(written),
            "log_lines": written.count(b"\n"),
            "frames": totals.frames,
            "token_frames": totals.token_frames,
            "completion_tokens": totals.tokens,
            "sim_cpu_s": round(spent["sim_cpu_s"], 4),
            "client_cpu_s": round(spent["client_cpu_s"], 4),
            "machine_busy_s": round(spent["machine_busy_s"], 3),
            "machine_stolen_s": round(spent["machine_stolen_s"], 3),
        }
    )


async def measure_end_to_end(
    runs: Sequence[Measured], sim: Process, params: Params, py_spy: str | None
) -> dict[str, Any]:
    """Open every connection, warm up, then the measured rounds in turn, the order reversed
    every other round (ABC CBA); then, with ``py_spy``, profile each configuration but the
    control under load."""
    async with contextlib.AsyncExitStack() as stack:
        for m in runs:
            m.sockets = await open_connections(
                stack, m.process.listening["ws_url"], params.connections
            )
        for m in runs:  # warm-up, not counted: the upstream pool fills, the KB is read
            problems = (await load_round(m.sockets, -1, params)).problems
            if problems:
                raise RuntimeError(f"{m.config.label}, warm-up:\n" + "\n".join(problems[:5]))
        before = [m.cpu_seconds() for m in runs]
        await trio.sleep(1.0)
        for m, cpu in zip(runs, before, strict=True):
            m.idle_cpu_s_per_s = round(m.cpu_seconds() - cpu, 4)
        for round_no in range(params.rounds):
            for m in runs if round_no % 2 == 0 else reversed(runs):
                await measured_round(m, sim, round_no, params)
        profiles = {}
        if py_spy is not None:
            for m in runs:
                if not m.config.control:
                    profiles[m.config.label] = await profile(m, params, py_spy)
    configs = {m.config.label: summarise(m) for m in runs}
    for label, shares in profiles.items():
        if "pct" not in shares:
            continue  # skipped: py-spy wrote nothing, and the report says why
        per_request = configs[label]["chatd_cpu_us_per_request"]
        shares["us_per_request"] = {
            key: round(pct / 100 * per_request, 1) for key, pct in shares["pct"].items()
        }
    return {"configs": configs, "profiles": profiles or None}


# What a profile sample is counted under: in a structlog call (rendering and
# writing a line, or the filtering logger dropping it), writing (the leaf is
# WriteLogger.msg: its write(2), which py-spy without --native puts there), in
# the span bookkeeping (any frame in spans.py, log calls included) or in metrics.
PROFILE_AREAS: dict[str, Callable[[list[tuple[str, str]]], bool]] = {
    "structlog_calls": lambda frames: any(p.startswith("structlog/") for _, p in frames),
    "write": lambda frames: frames[-1][0] == "WriteLogger.msg",
    "spans": lambda frames: any(p == "chatd/observability/spans.py" for _, p in frames),
    "metrics": lambda frames: any(
        p.startswith("prometheus_client/") or p == "chatd/observability/metrics.py"
        for _, p in frames
    ),
}


async def profile(m: Measured, params: Params, py_spy: str) -> dict[str, Any]:
    """Load rounds under py-spy attached to ``m``'s chatd: the share of its samples in each
    of :data:`PROFILE_AREAS`, where one process's CPU went, free of the noise between
    processes."""
    raw = m.config.log_file.with_suffix(".profile.txt")
    job = profiling.ProfileJob(py_spy, raw, raw.with_suffix(".log"))

    async def rounds() -> None:
        for k in range(params.profile_rounds):
            await load_round(m.sockets, params.rounds + k, params)

    status = await profiling.record_profile(job, m.process.pid, rounds)
    if not raw.exists():
        log = read_from(job.log, 0).decode(errors="replace")[-500:]
        return {"skipped": f"py-spy (status {status}) wrote nothing: {log}"}
    return profiling.area_shares(raw, PROFILE_AREAS)


def summarise(m: Measured) -> dict[str, Any]:
    """A configuration's rounds summed."""

    def total(key: str) -> float:
        return float(sum(r[key] for r in m.rounds))

    requests, wall = max(1.0, total("requests")), max(total("wall_s"), 1e-9)
    by_path: collections.Counter[str] = collections.Counter()
    for r in m.rounds:
        by_path.update(r["by_path"])
    return {
        "label": m.config.label,
        "description": m.config.description,
        "env": dict(m.config.env),
        "requests": int(total("requests")),
        "by_path": dict(by_path),
        "chatd_cpu_s": round(total("chatd_cpu_s"), 3),
        "chatd_utime_s": round(total("chatd_utime_s"), 2),
        "chatd_stime_s": round(total("chatd_stime_s"), 2),
        "chatd_cpu_us_per_request": round(total("chatd_cpu_s") / requests * 1e6, 1),
        "chatd_system_us_per_request": round(total("chatd_stime_s") / requests * 1e6, 1),
        "chatd_cpu_us_per_request_by_round": [r["chatd_cpu_us_per_request"] for r in m.rounds],
        "log_bytes_per_request": round(total("log_bytes") / requests, 1),
        "log_lines_per_request": round(total("log_lines") / requests, 2),
        "wall_s": round(wall, 3),
        "requests_per_s": round(requests / wall, 1),
        **busy_shares({key: total(key) for key in SPENT_KEYS}),
        "completion_tokens_per_request": round(total("completion_tokens") / requests, 1),
        "frames_per_request": round(total("frames") / requests, 2),
        "token_frames_per_request": round(total("token_frames") / requests, 2),
        "request_p50_ms": round(statistics.median(m.durations) * 1000, 1),
        "request_p95_ms": round(percentile(m.durations, 95) * 1000, 1),
        "idle_chatd_cpu_s_per_s": m.idle_cpu_s_per_s,
        "rounds": m.rounds,
    }


def log_shape(path: Path) -> dict[str, Any]:
    """Lines and bytes per request by path, from a whole log file (warm-up
    included): each request's lines found by ``request_id``, its path by its
    summary; also the answer and message lengths when the text is in it."""
    lines: collections.Counter[str] = collections.Counter()
    size: collections.Counter[str] = collections.Counter()
    path_of: dict[str, str] = {}
    text_chars: dict[str, list[int]] = collections.defaultdict(list)
    events: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return {}
    with open(path, "rb") as f:
        for raw in f:
            record = orjson.loads(raw)
            request_id = record.get("request_id")
            if request_id is None:
                continue
            lines[request_id] += 1
            size[request_id] += len(raw)
            events[record["event"] if record["event"] != "span" else f"span {record['span']}"] += 1
            if record["event"] == "request summary":
                path_of[request_id] = record["path"]
                text = len(record.get("message") or "") + len(record.get("answer") or "")
                text_chars[record["path"]].append(text)
    shape: dict[str, Any] = {}
    for p in PATHS:
        ids = [r for r, q in path_of.items() if q == p]
        if ids:
            shape[p] = {
                "requests": len(ids),
                "lines_per_request": round(sum(lines[r] for r in ids) / len(ids), 2),
                "bytes_per_request": round(sum(size[r] for r in ids) / len(ids), 1),
                "text_chars_per_request": round(statistics.fmean(text_chars[p]), 1),
            }
    shape["lines_without_summary"] = sum(n for r, n in lines.items() if r not in path_of)
    shape["events"] = dict(events.most_common())
    return shape
