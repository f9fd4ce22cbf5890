"""What request logs and metrics cost: chatd's CPU per request with logs on and off.

1. End to end: one simulated LLM and one chatd (``python -m chatd serve``) per configuration,
   side by side, differing only in ``CHATD_LOG_*`` (logs on; off; on with the text; a second
   logs-off process as an A/A control), take the same load in turns; each chatd's CPU and log
   growth are divided by the requests answered. Then (unless ``--no-profile``) more rounds
   under py-spy: the share of each process's CPU spent in structlog calls.
2. In process: the metrics calls and one request's trace per path, logged by chatd's own
   structlog set-up, timed in a loop.

The report says how each figure is taken. Results go to
benchmarks/results/observability{,-quick}.{json,md}.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import httpx
import orjson
import structlog
import trio
from trio_websocket import WebSocketConnection

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import PATH_B, percentile, rows, unique_chit_chat, unique_question
from loadgen import profiling
from loadgen.chat import Replies, ask, on_every_connection, open_connections
from loadgen.cpu import Usage
from loadgen.processes import Process, clean_env, log_tails_on_failure, proc_stat, start_sim
from loadgen.script import RunRecord, provenance_markdown, script_parser
from machine import machine_markdown, write_results

from chatd.config import LogSettings
from chatd.observability import Metrics, RequestTrace, configure_logging

RESULTS = Path(__file__).parent / "results"
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


@attrs.frozen
class Config:
    """One chatd: what its CHATD_LOG_* settings are, and where its log goes."""

    label: str
    description: str
    env: Mapping[str, str]
    log_file: Path
    control: bool = False


# The configurations: label: (description, CHATD_LOG_LEVEL, more settings). All write JSON to a
# file. The control, logs-off-2, is a second logs-off process: how far two chatd processes
# differ when nothing does (an A/A test). It comes next to logs-off, as logs-on is on its other
# side: in the ABCD DCBA order both pairs are always measured one after the other.
CONFIGS = {
    "logs-on": ("JSON to a file, level info", "info", {}),
    "logs-off": ("level error: spans and summaries filtered out", "error", {}),
    "logs-off-2": ("as logs-off: a second process (A/A)", "error", {}),
    "logs-on-text": (
        "JSON to a file, level info, include_text",
        "info",
        {"CHATD_LOG_INCLUDE_TEXT": "true"},
    ),
}


def configs_for(workdir: Path, include_text: bool, control: bool) -> list[Config]:
    """The configurations compared, but the control and ``logs-on-text`` if not wanted."""
    left_out = {"logs-off-2": not control, "logs-on-text": not include_text}
    configs = []
    for label, (description, level, extra) in CONFIGS.items():
        if not left_out.get(label):
            log = workdir / f"{label}.jsonl"
            env = {"CHATD_LOG_FILE": str(log), "CHATD_LOG_FORMAT": "json", "CHATD_LOG_LEVEL": level}
            configs.append(Config(label, description, env | extra, log, label == "logs-off-2"))
    return configs


# --- processes --------------------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, from /proc: chatd at level error never logs
    its ``listening`` line, so its port 0 is found the way ``ss -ltnp`` does."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


_libc = ctypes.CDLL(None, use_errno=True)


def cpu_clock(pid: int) -> int:
    """The CPU-time clock of process ``pid`` (``clock_getcpuclockid``): its utime + stime
    over all its threads, as /proc/PID/stat gives them, but in nanoseconds rather than 10 ms
    ticks, which would round a round's figure to tens of µs per request."""
    clock = ctypes.c_int()
    error = _libc.clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise OSError(error, os.strerror(error))
    return clock.value


def spawn_chatd(
    config: Config, llm_url: str, chatd_path: Path, workdir: Path, stack: contextlib.ExitStack
) -> Process:
    """Start ``python -m chatd serve --port 0`` with ``config``'s settings; killed
    when ``stack`` closes. :func:`wait_listening` finds where it listens."""
    kb = str(workdir / f"kb-{config.label}.sqlite3")
    log_path = workdir / f"chatd-{config.label}.out"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "chatd", "serve", "--port", "0", "--llm-url", llm_url],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=clean_env(chatd_path, CHATD_KB_PATH=kb, **config.env),
        )
    process = Process(f"chatd-{config.label}", popen, log_path)
    stack.callback(process.kill)
    return process


def wait_listening(process: Process, timeout_s: float = 30.0) -> None:
    """Wait until the process listens on one port and answers ``/healthz``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
            )
        ports = listening_ports(process.pid)
        if len(ports) == 1:
            url = f"http://127.0.0.1:{ports.pop()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    process.listening = {"url": url, "ws_url": url.replace("http", "ws") + "/v1/ws"}
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} was not serving in {timeout_s:g} s:\n{process.log_tail()}")


def read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` from ``offset`` on (nothing if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


# --- 1. end to end ----------------------------------------------------------------------


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
    totals = RoundTotals()
    await on_every_connection(sockets, ask_questions, round_no, params, totals)
    return totals


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
        "chatd_cpu_busy": round(total("chatd_cpu_s") / wall, 3),
        "sim_cpu_busy": round(total("sim_cpu_s") / wall, 3),
        "client_cpu_busy": round(total("client_cpu_s") / wall, 3),
        "machine_cores_busy": round(total("machine_busy_s") / wall, 2),
        "machine_cores_stolen": round(total("machine_stolen_s") / wall, 2),
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


# --- 2. in process ----------------------------------------------------------------------


def us_per_call(loop: Callable[[int], None], n: int, repeats: int) -> dict[str, float]:
    """µs per iteration of ``loop(n)``, over ``repeats`` runs: median and min."""
    loop(max(1, n // 10))  # warm up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        loop(n)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return {"median_us": round(statistics.median(samples), 3), "min_us": round(min(samples), 3)}


def micro_metrics(params: Params) -> dict[str, Any]:
    """What chatd's pushed metrics cost per call (prometheus_client counters and
    histograms, with their label lookups)."""
    metrics = Metrics()
    ttfts = (0.02, 0.05, 0.3, 1.2)

    def finished(n: int) -> None:
        for i in range(n):
            metrics.request_finished(PATHS[i % 3], "done", ttfts[i % 4], 0.4, 40, False, False)

    def cancelled(n: int) -> None:
        for _ in range(n):
            metrics.cancelled("client_cancel")

    def frames(n: int) -> None:
        for _ in range(n):
            metrics.frames_sent(3)

    loops = {"request_finished": finished, "cancelled": cancelled, "frames_sent": frames}
    result: dict[str, Any] = {
        name: us_per_call(loop, params.metrics_calls, params.micro_repeats)
        for name, loop in loops.items()
    }
    result["per_request_us"] = round(
        result["request_finished"]["median_us"] + result["cancelled"]["median_us"], 3
    )
    return result


# What each path's request writes, as chatd/pipeline/chat.py and answer.py do
# (checked against the end-to-end log: see ``log_shape``): the spans in order,
# the streamed events each LLM call's span is marked on, and the summary.
ANSWERS = {
    "direct": "Once upon a time " + "the sea was calm and the gulls were quiet, " * 5,
    "tools": "The result is 1517.",
    "tool_stream": "Open Settings, choose Account, then Reset password; " * 3,
}
TOKENS = {"direct": 60, "tools": 13, "tool_stream": 0}


def trace_request(path: str, include_text: bool, n: int) -> None:
    """One request's trace, made and filled as the pipeline does (inside trio)."""
    request_id = f"req_{n:016x}"
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        context = structlog.contextvars.get_contextvars()
        trace = RequestTrace(
            request_id,
            log=structlog.get_logger("chatd.trace").bind(**context),
            include_text=include_text,
        )
        with trace.span("admission"):
            pass
        with trace.span("prepare") as prepare:
            prepare.set(messages=2)
        with trace.span("cache") as lookup:
            lookup.set(hit=False)
        with trace.span("flight") as flight:
            flight.set(created=True)
            with trace.span("router") as router:
                for _ in range(TOKENS["direct"] if path == "direct" else 4):
                    router.mark()
                if path == "tool_stream":
                    with trace.span("tools", tools="frequently_asked"):
                        now = trace.clock()
                        trace.record("tool", now - 0.001, now, outcome="ok", error=None,
                                     tool="frequently_asked")  # fmt: skip
                    with trace.span("tool_stream", tool="frequently_asked"):
                        pass
                else:
                    router.set(
                        finish_reason="tool_calls" if path == "tools" else "stop",
                        tool_calls=int(path == "tools"),
                    )
            if path == "tools":
                with trace.span("tools", tools="calculator"):
                    now = trace.clock()
                    trace.record("tool", now - 0.0001, now, outcome="ok", error=None,
                                 tool="calculator")  # fmt: skip
                with trace.span("answer") as answer:
                    for _ in range(TOKENS["tools"] + 1):
                        answer.mark()
                    answer.set(finish_reason="stop")
        trace.record("stream", trace.started, trace.clock(), tokens=TOKENS[path])
        trace.summary(
            path=path,
            outcome="done",
            error=None,
            shared=False,
            cached=False,
            tokens={"prompt": 27 if path == "direct" else 81, "completion": TOKENS[path]},
            queue_ms=0.0,
            message=question(path, n),
            answer=ANSWERS[path],
        )


# How the in-process traces are logged: name: (description, level, include_text, to a
# line-buffered file rather than an in-memory stream).
VARIANTS = {
    "json-file": ("level info, JSON to a line-buffered file (as log.file)", "info", False, True),
    "json-memory": ("level info, JSON to an in-memory stream", "info", False, False),
    "json-memory-text": ("as json-memory, with include_text", "info", True, False),
    "filtered": (
        "level error: every span and summary call filtered (logs off)",
        "error",
        False,
        False,
    ),
}


def micro_traces(params: Params, workdir: Path) -> dict[str, Any]:
    """µs per request of each path's trace under each variant; the repeats
    interleave the variants and paths, so drift in the machine falls on all."""
    samples: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    written: dict[tuple[str, str], tuple[float, float]] = {}
    n = params.micro_requests

    def run(level: str, include_text: bool, path: str, stream: TextIO, first: int) -> float:
        configure_logging(LogSettings(level=level, format="json"), stream=stream)
        started = time.perf_counter()
        for i in range(first, first + n):
            trace_request(path, include_text, i)
        return (time.perf_counter() - started) / n * 1e6

    async def main(file: TextIO) -> None:
        with structlog.contextvars.bound_contextvars(connection_id="conn_1"):
            for repeat in range(-1, params.micro_repeats):  # repeat -1 warms up
                for name, (_description, level, include_text, to_file) in VARIANTS.items():
                    for path in PATHS:
                        stream = file if to_file else io.StringIO()
                        us = run(level, include_text, path, stream, (repeat + 1) * n)
                        if repeat >= 0:
                            samples[name, path].append(us)
                        if isinstance(stream, io.StringIO):
                            text = stream.getvalue()
                            written[name, path] = (len(text) / n, text.count("\n") / n)

    try:
        with open(workdir / "micro.jsonl", "a", encoding="utf-8", buffering=1) as file:
            trio.run(main, file)
    finally:
        structlog.reset_defaults()
    result: dict[str, Any] = {}
    for name, (description, _level, _text, to_file) in VARIANTS.items():
        per_path = {}
        for path in PATHS:
            s = samples[name, path]
            # The file gets what the memory stream gets.
            size, lines = written["json-memory" if to_file else name, path]
            per_path[path] = {
                "median_us": round(statistics.median(s), 2),
                "min_us": round(min(s), 2),
                "bytes_per_request": round(size, 1),
                "lines_per_request": round(lines, 2),
            }
        mix = {"median_us": 2, "bytes_per_request": 1, "lines_per_request": 2}  # and digits
        result[name] = {
            "description": description,
            "paths": per_path,
            **{
                f"mix_{key}": round(statistics.fmean(per_path[p][key] for p in PATHS), digits)
                for key, digits in mix.items()
            },
        }
    return result


# --- report -----------------------------------------------------------------------------


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Round-by-round differences ``a - b`` (each pair measured one after the
    other): the rounds, their median, mean and its standard error."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return {
        "by_round": [round(d, 1) for d in diffs],
        "median": round(statistics.median(diffs), 1),
        "mean": round(statistics.fmean(diffs), 1),
        "stderr": round(statistics.stdev(diffs) / len(diffs) ** 0.5, 1) if len(diffs) > 1 else None,
    }


def compare(
    e2e: Mapping[str, Any], micro: Mapping[str, Any], profiles: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Logs on against logs off; the A/A control; the profiles; what part 2 predicts."""
    on, off = e2e["logs-on"], e2e["logs-off"]
    key, by_round, system = (
        "chatd_cpu_us_per_request",
        "chatd_cpu_us_per_request_by_round",
        "chatd_system_us_per_request",
    )
    traces, metrics_us = micro["traces"], micro["metrics"]["per_request_us"]
    file_us, filtered_us = traces["json-file"]["mix_median_us"], traces["filtered"]["mix_median_us"]
    lines = traces["json-file"]["mix_lines_per_request"]
    result: dict[str, Any] = {
        "on_minus_off_us_per_request": round(on[key] - off[key], 1),
        "on_over_off": round(on[key] / off[key], 4),
        "on_minus_off_paired": _paired(on[by_round], off[by_round]),
        "micro_on_minus_off_us": round(file_us - filtered_us, 1),
        "e2e_over_micro": round((on[key] - off[key]) / max(file_us - filtered_us, 1e-9), 2),
        "system_on_minus_off_us": round(on[system] - off[system], 1),
        "micro_render_and_write_us_per_line": round((file_us - filtered_us) / lines, 2),
        "micro_write_us_per_line": round(
            (file_us - traces["json-memory"]["mix_median_us"]) / lines, 2
        ),
        "micro_bookkeeping_us_per_request": filtered_us,
        "micro_metrics_us_per_request": metrics_us,
        "micro_left_with_logs_off_share": round((filtered_us + metrics_us) / off[key], 4),
    }
    if "logs-off-2" in e2e:
        again = e2e["logs-off-2"]
        result["aa_us_per_request"] = round(again[key] - off[key], 1)
        result["aa_ratio"] = round(again[key] / off[key], 4)
        result["aa_paired"] = _paired(again[by_round], off[by_round])
        result["aa_system_us"] = round(again[system] - off[system], 1)
    if "logs-on-text" in e2e:
        text = e2e["logs-on-text"]
        result["text_minus_on_us_per_request"] = round(text[key] - on[key], 1)
        result["text_over_off"] = round(text[key] / off[key], 4)
        result["text_extra_bytes_per_request"] = round(
            text["log_bytes_per_request"] - on["log_bytes_per_request"], 1
        )
    if profiles and "pct" in profiles.get("logs-on", {}) and "pct" in profiles.get("logs-off", {}):
        on_us = profiles["logs-on"]["us_per_request"]
        off_us = profiles["logs-off"]["us_per_request"]
        in_situ = on_us["structlog_calls"] - off_us["structlog_calls"]
        result["in_situ_on_minus_off_us"] = round(in_situ, 1)
        result["in_situ_share_of_on"] = round(in_situ / on[key], 4)
        result["in_situ_write_us"] = on_us["write"]
        result["in_situ_over_micro"] = round(in_situ / max(file_us - filtered_us, 1e-9), 2)
        result["in_situ_left_with_logs_off_us"] = round(off_us["spans"] + off_us["metrics"], 1)
        result["in_situ_on_structlog_us"] = on_us["structlog_calls"]
        if "pct" in profiles.get("logs-on-text", {}):
            text_us = profiles["logs-on-text"]["us_per_request"]["structlog_calls"]
            result["in_situ_text_structlog_us"] = text_us
    return result


def conclusions(e2e: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    """The short answer, in sentences with the numbers."""
    on, off = e2e["logs-on"], e2e["logs-off"]
    key = "chatd_cpu_us_per_request"
    paired = c["on_minus_off_paired"]
    se = f" ± {paired['stderr']} (s.e.)" if paired["stderr"] is not None else ""
    diff = c["on_minus_off_us_per_request"]
    first = (
        f"End to end, chatd with logs on spent **{abs(diff)} µs** "
        f"{'more' if diff >= 0 else 'less'} CPU per request than with logs off ({on[key]} "
        f"against {off[key]} µs, **{(c['on_over_off'] - 1) * 100:+.1f}%**; round by round "
        f"{paired['mean']}{se} µs), "
        f"writing {on['log_lines_per_request']} lines, {on['log_bytes_per_request']:.0f} bytes "
        "per request."
    )
    if "aa_us_per_request" in c:
        aa, aa_paired = c["aa_us_per_request"], c["aa_paired"]
        aa_se = f" ± {aa_paired['stderr']}" if aa_paired["stderr"] is not None else ""
        first += (
            f" The A/A control, two identical logs-off processes, differed by {aa} µs "
            f"({(c['aa_ratio'] - 1) * 100:+.1f}%; round by round {aa_paired['mean']}{aa_se} µs)"
            + (
                ": as much, so end to end alone this run does not pin the cost down."
                if abs(aa) >= abs(diff) / 2
                else ": the difference stands out of the noise between processes."
            )
        )
    lines = [first]
    if "in_situ_on_minus_off_us" in c:
        lines.append(
            "Profiled in the running servers (py-spy: where one process's time goes, free of the "
            f"noise between processes), logs on spend **{c['in_situ_on_minus_off_us']} µs per "
            f"request** ({c['in_situ_share_of_on'] * 100:.1f}% of chatd's CPU) in structlog calls "
            f"beyond logs off's filtered ones. {c['in_situ_write_us']} µs of that has the write(2) "
            "of a line as its leaf; py-spy counts a thread that is runnable as well as one "
            "running, so that may include waiting for a CPU after the write (two cores, four "
            "busy processes), and chatd's system time does not settle it: it differs by "
            f"{c['system_on_minus_off_us']} µs per request between logs on and off"
            + (f", by {c['aa_system_us']} µs in the A/A control." if "aa_system_us" in c else ".")
        )
    micro_line = (
        f"In one process's tight loop, rendering and writing a request's lines costs "
        f"{c['micro_on_minus_off_us']} µs ({c['micro_render_and_write_us_per_line']} µs per "
        f"line, {c['micro_write_us_per_line']} µs of it the write(2)): a floor"
    )
    ratios = []
    if c["e2e_over_micro"] > 1:
        ratios.append(f"{c['e2e_over_micro']}x that end to end")
    if c.get("in_situ_over_micro", 0) > 1:
        ratios.append(f"{c['in_situ_over_micro']}x in the profile")
    if ratios:
        micro_line += (
            f". In the server the same lines cost {' and '.join(ratios)}, likely because there a "
            "request's lines are written one at a time among other work, not back to back, so "
            "code and data are cold each time"
        )
    lines.append(micro_line + ".")
    left = (
        "With logs off, what remains is the traces' bookkeeping "
        f"({c['micro_bookkeeping_us_per_request']} µs per request in the loop: spans kept, log "
        f"calls filtered) and the metrics ({c['micro_metrics_us_per_request']} µs for "
        "`request_finished` + `cancelled`): "
        f"{c['micro_left_with_logs_off_share'] * 100:.1f}% of chatd's CPU per request"
    )
    if "in_situ_left_with_logs_off_us" in c:
        left_us = c["in_situ_left_with_logs_off_us"]
        left += f"; {left_us} µs ({left_us / off[key] * 100:.1f}%) in the logs-off profile"
    lines.append(left + ".")
    if "text_minus_on_us_per_request" in c:
        text = (
            f"`include_text` adds {c['text_extra_bytes_per_request']:.0f} bytes per request (the "
            "message and the answer in the summary); end to end it measured "
            f"{c['text_minus_on_us_per_request']:+} µs of CPU per request over logs on"
        )
        if "aa_us_per_request" in c:
            text += f" (the A/A control: {c['aa_us_per_request']:+} µs)"
        if c["text_minus_on_us_per_request"] < 0:
            text += ": less, which only the noise between processes can explain"
        if "in_situ_text_structlog_us" in c:
            text += (
                f"; in situ its structlog calls took {c['in_situ_text_structlog_us']} µs per "
                f"request against {c['in_situ_on_structlog_us']} µs with logs on"
            )
        lines.append(text + ".")
    return lines


def _profile_markdown(profiles: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    rows = "\n".join(
        f"| {label} | {v['samples']} | "
        + " | ".join(f"{v['pct'][a]}% ({v['us_per_request'][a]} µs)" for a in PROFILE_AREAS)
        + " |"
        if "pct" in v
        else f"| {label} | {v['skipped']} |"
        for label, v in profiles.items()
    )
    return (
        "\n### Where the CPU went, in situ (py-spy)\n\n"
        f"{p['profile_rounds']} more rounds per configuration (not counted above) under py-spy "
        "at 250 Hz, one configuration at a time. Share of chatd's samples (idle trio worker "
        "threads left out) with a frame in: *structlog calls* (rendering and writing a line, or "
        "dropping it at level error), *write* (the leaf is `WriteLogger.msg`: its write(2)), "
        "*spans* (spans.py, its log calls included), *metrics* (prometheus_client or "
        "metrics.py); µs per request is that share of the configuration's CPU per request "
        "above.\n\n| config | samples | structlog calls | write | spans | metrics |\n"
        f"|---|---|---|---|---|---|\n{rows}\n"
    )


E2E_ROW = (
    "| {label} | {description} | {requests} | **{chatd_cpu_us_per_request}** "
    "| {chatd_system_us_per_request} | {vs_off:.3f} | {log_bytes_per_request:.0f} "
    "| {log_lines_per_request} | {chatd_cpu_busy:.0%} | {requests_per_s} "
    "| {request_p50_ms} / {request_p95_ms} | {frames_per_request} | {sim_cpu_busy:.0%} "
    "| {client_cpu_busy:.0%} | {machine_cores_busy} |"
)
SHAPE_ROW = (
    "| {label} | {path} | {lines_per_request} | {bytes_per_request:.0f} "
    "| {text_chars_per_request:.0f} |"
)


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, e2e, micro, c = result["params"], result["e2e"], result["micro"], result["comparison"]
    off_us = e2e["logs-off"]["chatd_cpu_us_per_request"]
    e2e_rows = rows(
        E2E_ROW, ({**v, "vs_off": v["chatd_cpu_us_per_request"] / off_us} for v in e2e.values())
    )
    by_round = "\n".join(
        f"- {v['label']}: {v['chatd_cpu_us_per_request_by_round']}" for v in e2e.values()
    )
    paired = [("logs-on − logs-off", c["on_minus_off_paired"])]
    if "aa_paired" in c:
        paired.append(("logs-off-2 − logs-off (A/A)", c["aa_paired"]))
    paired_rows = "\n".join(
        f"| {name} | {d['by_round']} | {d['median']} | {d['mean']} | {d['stderr']} |"
        for name, d in paired
    )
    shape_rows = rows(
        SHAPE_ROW,
        (
            {"label": label, "path": path, **s}
            for label, shape in result["log_shape"].items()
            for path, s in shape.items()
            if path in PATHS
        ),
    )
    trace_rows = "\n".join(
        f"| {name} | {v['description']} | "
        + " | ".join(f"{v['paths'][path]['median_us']}" for path in PATHS)
        + f" | **{v['mix_median_us']}** | {v['mix_bytes_per_request']:.0f} "
        f"| {v['mix_lines_per_request']} |"
        for name, v in micro["traces"].items()
    )
    metric_rows = "\n".join(
        f"| `{name}` | {v['median_us']} | {v['min_us']} |"
        for name, v in micro["metrics"].items()
        if isinstance(v, dict)
    )
    extra = []
    if p["include_text"]:
        extra.append("`logs-on-text` adds `CHATD_LOG_INCLUDE_TEXT=true`")
    if p["control"]:
        extra.append(
            "`logs-off-2` is a second logs-off process, the control: how far two chatd "
            "processes differ when nothing does"
        )
    profiles = profiling.profile_section(
        result.get("profiles"), "### Profiles", lambda f: _profile_markdown(f, p)
    )
    return (
        "# Observability: chatd's CPU per request with logs on and off\n\n"
        f"`{result['command']}` ({result['elapsed_s']} s); {provenance_markdown(result['chatd'])}. "
        "The machine is shared and noisy: compare configurations within this run, not absolute "
        "times across runs.\n\n## Conclusion\n\n"
        + "".join(f"- {line}\n" for line in result["conclusions"])
        + "\n## 1. End to end\n\n"
        f"One simulated LLM (ttft {p['sim_ttft_ms']:g} ms, {p['sim_tokens_per_s']:g} tokens/s) "
        "and one chatd process per configuration, all with `CHATD_LOG_FORMAT=json` and "
        "`CHATD_LOG_FILE` (a temporary file); `logs-on` at `CHATD_LOG_LEVEL=info`, `logs-off` at "
        "`error`"
        + "".join(f"; {e}" for e in extra)
        + f". Each round, {p['connections']} WebSocket connections per chatd (opened "
        f"beforehand) each ask {p['chats_per_connection']} questions one after another, the "
        'paths in turn (chit-chat: `direct`; "what is N*M?": `tools`; a confident FAQ '
        "question: `tool_stream`), every one asked for the first time (checked: the expected "
        f"path, `cached` and `shared` false). {p['rounds']} measured rounds per configuration "
        "after a warm-up round, taken in turn with the order reversed every other round. chatd "
        "CPU is its utime+stime over the rounds, read from its CPU-time clock "
        "(`clock_getcpuclockid`, in ns; /proc/PID/stat counts the same in 10 ms ticks, too "
        "coarse for one round, and gives the *system* part, over all rounds). Log bytes and "
        "lines are the log file's growth over the rounds.\n\n"
        "| config | logging | requests | chatd CPU µs/request | of which system | vs logs-off "
        "| log bytes/request | log lines/request | chatd CPU busy | requests/s "
        "| request p50 / p95 ms | frames/request | sim CPU busy | client CPU busy "
        "| machine cores busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{e2e_rows}\n\nchatd CPU µs/request by round:\n\n{by_round}\n\n"
        "Differences round by round (µs/request; each pair measured one after the other):\n\n"
        "| difference | by round | median | mean | s.e. |\n|---|---|---|---|---|\n"
        f"{paired_rows}\n\n"
        "Lines and bytes per request by path, from each log file as a whole (warm-up included; "
        "a request's lines found by `request_id`):\n\n"
        "| config | path | lines/request | bytes/request | text chars in summary |\n"
        f"|---|---|---|---|---|\n{shape_rows}\n{profiles}\n## 2. In process\n\n"
        "One request's `RequestTrace` as the pipeline makes it (a logger bound to the "
        "connection's context, the spans each path writes in the end-to-end log, the router and "
        "answer spans marked once per streamed event, then the `stream` span and the summary), "
        "inside `trio.run`, logged through chatd's own `configure_logging`; "
        f"{p['micro_requests']} requests per path and variant, back to back, "
        f"{p['micro_repeats']} repeats interleaved (median µs per request shown); *mix* is the "
        "mean of the three paths, as the end-to-end load mixes them.\n\n"
        "| variant | logging | direct µs | tools µs | tool_stream µs | mix µs | bytes/request "
        f"| lines/request |\n|---|---|---|---|---|---|---|---|\n{trace_rows}\n\n"
        f"Metrics, µs per call ({p['metrics_calls']} calls, {p['micro_repeats']} repeats; "
        "`request_finished` cycles the three paths' labels):\n\n"
        f"| call | median µs | min µs |\n|---|---|---|\n{metric_rows}\n\n"
        f"Per request (`request_finished` + `cancelled`): {micro['metrics']['per_request_us']} "
        "µs. `frames_sent` is called once per batch of frames the writer sends.\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


# --- main -------------------------------------------------------------------------------


def run_end_to_end(
    params: Params,
    configs: Sequence[Config],
    chatd_path: Path,
    workdir: Path,
    py_spy: str | None = None,
) -> dict[str, Any]:
    """Part 1 from start to end: a simulator and one chatd per configuration, measured
    with :func:`measure_end_to_end`; every process is killed on the way out."""
    with contextlib.ExitStack() as stack:
        sim = start_sim(workdir, chatd_path, params.sim_ttft_ms, params.sim_tokens_per_s, stack)
        runs = [
            Measured(c, spawn_chatd(c, sim.listening["url"], chatd_path, workdir, stack))
            for c in configs
        ]
        try:
            with log_tails_on_failure((sim, *(m.process for m in runs))):
                for m in runs:
                    wait_listening(m.process)
                return trio.run(measure_end_to_end, runs, sim, params, py_spy)
        except BaseException:
            for c in configs:
                print(f"--- {c.label} log file tail ---", file=sys.stderr)
                print(read_from(c.log_file, 0).decode(errors="replace")[-2000:], file=sys.stderr)
            raise


def main() -> None:
    parser = script_parser(__doc__, "a short run (well under a minute)", chatd_path=True)
    parser.add_argument("--connections", type=int, help="connections per chatd (50; quick 30)")
    parser.add_argument("--chats", type=int, help="questions per connection per round (6; quick 3)")
    parser.add_argument("--rounds", type=int, help="measured rounds per configuration (8; quick 2)")
    parser.add_argument("--no-text", action="store_true", help="leave out logs-on-text")
    parser.add_argument(
        "--no-control", action="store_true", help="leave out logs-off-2, the A/A control"
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip profiling each chatd (but the control) under load with py-spy",
    )
    args = parser.parse_args()
    quick = bool(args.quick)
    params = Params(
        quick=quick,
        connections=args.connections or (30 if quick else 50),
        chats_per_connection=args.chats or (3 if quick else 6),
        rounds=args.rounds or (2 if quick else 8),
        include_text=not args.no_text,
        control=not args.no_control,
        profile=not args.no_profile,
        profile_rounds=2 if quick else 5,
        micro_requests=300 if quick else 2000,
        micro_repeats=3 if quick else 5,
        metrics_calls=20_000 if quick else 100_000,
    )
    chatd_path: Path = args.chatd_path.resolve()
    record = RunRecord.start(__file__, chatd_path)
    py_spy = profiling.find_py_spy() if params.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        workdir = Path(tmp)
        configs = configs_for(workdir, params.include_text, params.control)
        measured = run_end_to_end(params, configs, chatd_path, workdir, py_spy)
        info = [c for c in configs if c.env["CHATD_LOG_LEVEL"] == "info"]
        shapes = {c.label: log_shape(c.log_file) for c in info}
        micro = {"metrics": micro_metrics(params), "traces": micro_traces(params, workdir)}
    profiles = measured["profiles"]
    if params.profile and py_spy is None:
        profiles = {"skipped": profiling.PY_SPY_MISSING}
    figures = {
        "e2e": measured["configs"],
        "profiles": profiles,
        "log_shape": shapes,
        "micro": micro,
    }
    result = record.result(
        "observability: chatd CPU per request with logs on and off", params, figures
    )
    result["comparison"] = compare(result["e2e"], micro, result["profiles"])
    result["conclusions"] = conclusions(result["e2e"], result["comparison"])
    name = "observability" + ("-quick" if quick else "")
    write_results(RESULTS, name, result, markdown(result))


if __name__ == "__main__":
    main()
