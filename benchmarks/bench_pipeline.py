"""The whole pipeline, end to end: time to first token by path, server CPU per token.

chatd runs as its own process (``python -m chatd serve --port 0``) against the
simulated LLM in another process (``python -m chatd sim-llm --port 0``); this
process is the client, over trio-websocket. Two measurements in one run:

1. **TTFT by path.** The simulator at ``--ttft-ms`` 300 and 40 tokens/s. Each
   round sends, side by side on three connections, a FAQ question that is
   answered confidently (``tool_stream``, Path B), an arithmetic question
   (``tools`` via ``calculator``, Path A) and a FAQ question with no
   confident entry (``tools`` via ``frequently_asked``, Path A). TTFT is
   measured by the client, from sending ``chat`` to the first ``token``;
   each request is cancelled once its first token is in. Target: the ratio
   of medians B/A at most 0.5.
2. **Server CPU per streamed token.** The simulator switched to 50 ms and
   200 tokens/s; 100 WebSocket connections each ask chit-chat questions (the
   ``direct`` path) one after another. chatd's CPU (utime + stime from
   /proc/PID/stat) over each load round is divided by the simulator's tokens
   (``usage.completion_tokens``) and by the frames sent. Two chatd processes
   run at once, one with the default ``server.token_merge_ms`` and one with
   ``CHATD_SERVER_TOKEN_MERGE_MS=0``; rounds alternate between them (ABBA) so
   the machine's noise falls on both alike.

``--profile`` adds load rounds (not counted above) under py-spy, attached to
the default-merge chatd, and summarises where its CPU went. Results go to
benchmarks/results/pipeline{,-quick}.{json,md}; the raw collapsed stacks to
pipeline{,-quick}-profile.txt.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, machine_markdown

from chatd.llm.sim.completions import ARGUMENT_PIECE_CHARS
from chatd.llm.sim.rules import ToolCallsPlan, default_rules, plan_reply

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5
# design.md ("Known traps"): ~6-20 µs per upstream token when tokens read
# together go out together. The issue sets no number for CPU per token; this
# is the design's own expectation, used for the verdict line.
DESIGN_US_PER_TOKEN = 20.0

PATH_B = ("tool_stream", "How do I reset my password?")
PATH_A = {
    "tools_calculator": "what is 12*(3+4)?",
    "tools_faq_unsure": "Can I pay with crypto currency?",
}
# None of these is a question, an expression or about the clock: the
# simulator answers each directly, in 33 to 55 tokens.
CHIT_CHAT = (
    "tell me a story about the sea",
    "tell me a joke about cats",
    "say something nice about mornings",
    "describe a walk in the forest",
    "tell me about your favourite season",
    "write a short poem about rain",
    "share a thought about cooking dinner",
    "talk about the mountains in winter",
    "tell me a story about a lighthouse",
    "give me some encouragement for today",
)
OFFERED_TOOLS = ("frequently_asked", "calculator", "clock")


@attrs.frozen
class Params:
    """What one run does."""

    quick: bool
    ttft_rounds: int
    ttft_ms: float
    ttft_tokens_per_s: float
    load_connections: int
    load_chats_per_connection: int
    load_rounds: int
    load_ttft_ms: float
    load_tokens_per_s: float
    default_merge_ms: float
    profile: bool
    profile_rounds: int


# --- processes --------------------------------------------------------------------------


@attrs.define
class Process:
    """A chatd or simulator subprocess, its log file and its listening line."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    listening: dict[str, Any] = attrs.field(factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process, in seconds."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Kill it and reap it; harmless if it already exited."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CHATD_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def start_process(
    name: str, args: Sequence[str], workdir: Path, env: Mapping[str, str], stack: contextlib.ExitStack
) -> Process:
    """Start ``python -m chatd ARGS``, logging to a file (a pipe left unread
    could fill and stall it), and wait for its JSON log line with a ``url``."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "chatd", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=dict(env),
        )
    process = Process(name, popen, log_path)
    stack.callback(process.kill)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and "url" in record:
                    process.listening = record
                    return process
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{process.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} printed no listening line in 30 s:\n{process.log_tail()}")


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


# --- 1. time to first token by path -----------------------------------------------------


def floor_ms(message: str, ttft_ms: float, tokens_per_s: float) -> tuple[str, float]:
    """The simulator's own floor for a message's first answer token.

    The router call's last tool-call unit is due at ``ttft + (units - 1) /
    rate``; Path B can answer then, Path A needs a second call and its TTFT.
    Returns (first tool, floor in ms for the path it should take).
    """
    tools = [{"type": "function", "function": {"name": n}} for n in OFFERED_TOOLS]
    plan = plan_reply({"messages": [{"role": "user", "content": message}], "tools": tools},
                      default_rules())  # fmt: skip
    if not isinstance(plan, ToolCallsPlan):
        raise RuntimeError(f"the simulator would not call a tool for {message!r}")
    units = sum(
        1 + math.ceil(len(orjson.dumps(call.arguments)) / ARGUMENT_PIECE_CHARS)
        for call in plan.calls
    )
    router_ms = ttft_ms + (units - 1) * 1000 / tokens_per_s
    return plan.calls[0].name, router_ms


async def ttft_request(
    ws: WebSocketConnection, request_id: str, message: str
) -> tuple[float, str | None, dict[str, Any]]:
    """Send one chat, time its first token, cancel it; (ttft s, path, terminal)."""
    path: str | None = None
    first: float | None = None
    with trio.fail_after(60):
        started = time.perf_counter()
        await ws.send_message(orjson.dumps({"type": "chat", "id": request_id, "message": message}).decode())
        while True:
            event = orjson.loads(await ws.get_message())
            if event.get("id") != request_id:
                continue
            kind = event["type"]
            if kind == "route":
                path = event["path"]
            elif kind == "token" and first is None:
                first = time.perf_counter() - started
                await ws.send_message(orjson.dumps({"type": "cancel", "id": request_id}).decode())
            elif kind in ("done", "error"):
                if first is None:
                    raise RuntimeError(f"{request_id} ended without a token: {event}")
                return first, path, event


async def measure_ttft(ws_url: str, params: Params) -> dict[str, Any]:
    """Rounds of one request per kind, side by side, one connection per kind."""
    kinds = {PATH_B[0]: PATH_B[1], **PATH_A}
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    server_ttft: dict[str, list[float]] = {kind: [] for kind in kinds}
    wrong_paths: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        sockets = {kind: await stack.enter_async_context(open_websocket_url(ws_url)) for kind in kinds}

        async def one(kind: str, round_no: int, record: bool) -> None:
            expected = "tool_stream" if kind == PATH_B[0] else "tools"
            ttft, path, terminal = await ttft_request(sockets[kind], f"{kind}-{round_no}", kinds[kind])
            if path != expected or terminal["type"] != "done":
                wrong_paths.append(f"{kind}: path {path}, terminal {terminal}")
            if record:
                samples[kind].append(ttft)
                ttft_ms = terminal.get("timings", {}).get("ttft_ms")
                if ttft_ms is not None:
                    server_ttft[kind].append(ttft_ms / 1000)

        for round_no in range(-1, params.ttft_rounds):  # round -1 warms up
            async with trio.open_nursery() as nursery:
                for kind in kinds:
                    nursery.start_soon(one, kind, round_no, round_no >= 0)
    if wrong_paths:
        raise RuntimeError("requests took the wrong path:\n" + "\n".join(wrong_paths[:10]))

    floors = {}
    for kind, message in kinds.items():
        _tool, router_ms = floor_ms(message, params.ttft_ms, params.ttft_tokens_per_s)
        floors[kind] = round(router_ms + (0 if kind == PATH_B[0] else params.ttft_ms), 1)
    paths = {
        kind: {
            "message": kinds[kind],
            "client": summary_ms(samples[kind]),
            "server_p50_ms": round(statistics.median(server_ttft[kind]) * 1000, 1),
            "sim_floor_ms": floors[kind],
        }
        for kind in kinds
    }
    b = paths[PATH_B[0]]
    ratios = {}
    for kind in PATH_A:
        a = paths[kind]
        ratios[kind] = {
            "ratio_of_medians": round(b["client"]["p50_ms"] / a["client"]["p50_ms"], 3),
            "ratio_of_p95": round(b["client"]["p95_ms"] / a["client"]["p95_ms"], 3),
            "sim_floor_ratio": round(floors[PATH_B[0]] / floors[kind], 3),
            "met": b["client"]["p50_ms"] / a["client"]["p50_ms"] <= TARGET_RATIO,
        }
    return {"paths": paths, "ratios_b_over_a": ratios}


# --- 2. server CPU per streamed token ---------------------------------------------------


@attrs.define
class LoadTotals:
    """What the client saw over one load round."""

    chats: int = 0
    errors: int = 0
    frames: int = 0
    token_frames: int = 0
    token_chars: int = 0
    sim_tokens: int = 0
    paths: collections.Counter[str] = attrs.field(factory=collections.Counter)


async def chat_worker(
    ws: WebSocketConnection, index: int, round_no: int, chats: int, totals: LoadTotals
) -> None:
    """One connection: ``chats`` chit-chat requests, one after another."""
    for k in range(chats):
        request_id = f"r{round_no}-{k}"
        message = CHIT_CHAT[(index + k + round_no) % len(CHIT_CHAT)]
        await ws.send_message(orjson.dumps({"type": "chat", "id": request_id, "message": message}).decode())
        while True:
            event = orjson.loads(await ws.get_message())
            totals.frames += 1
            kind = event["type"]
            if kind == "token":
                totals.token_frames += 1
                totals.token_chars += len(event["text"])
            elif kind == "done":
                totals.chats += 1
                totals.sim_tokens += event["usage"]["completion_tokens"]
                totals.paths[event["path"]] += 1
                break
            elif kind == "error":
                totals.errors += 1
                break


async def load_round(
    sockets: Sequence[WebSocketConnection], round_no: int, chats: int
) -> LoadTotals:
    totals = LoadTotals()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for index, ws in enumerate(sockets):
                nursery.start_soon(chat_worker, ws, index, round_no, chats, totals)
    return totals


@attrs.define
class Tally:
    """One chatd configuration's load rounds, summed."""

    label: str
    merge_ms: float
    process: Process
    cpu_s: float = 0.0
    wall_s: float = 0.0
    sim_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    totals: LoadTotals = attrs.field(factory=LoadTotals)
    rounds: list[dict[str, Any]] = attrs.field(factory=list)

    def add(self, totals: LoadTotals, cpu: float, wall: float, sim_cpu: float, client: float) -> None:
        self.cpu_s += cpu
        self.wall_s += wall
        self.sim_cpu_s += sim_cpu
        self.client_cpu_s += client
        for field in ("chats", "errors", "frames", "token_frames", "token_chars", "sim_tokens"):
            setattr(self.totals, field, getattr(self.totals, field) + getattr(totals, field))
        self.totals.paths.update(totals.paths)
        self.rounds.append(
            {
                "wall_s": round(wall, 3),
                "chatd_cpu_s": round(cpu, 3),
                "sim_tokens": totals.sim_tokens,
                "chatd_us_per_sim_token": round(cpu / max(1, totals.sim_tokens) * 1e6, 1),
            }
        )

    def result(self, connections: int, tokens_per_s: float) -> dict[str, Any]:
        t = self.totals
        tokens, frames = max(1, t.sim_tokens), max(1, t.frames)
        per_token_us = [r["chatd_us_per_sim_token"] for r in self.rounds]
        return {
            "label": self.label,
            "token_merge_ms": self.merge_ms,
            "chats": t.chats,
            "errors": t.errors,
            "paths": dict(t.paths),
            "sim_tokens": t.sim_tokens,
            "token_frames": t.token_frames,
            "all_frames": t.frames,
            "sim_tokens_per_token_frame": round(t.sim_tokens / max(1, t.token_frames), 2),
            "wall_s": round(self.wall_s, 3),
            "demanded_tokens_per_s": round(connections * tokens_per_s),
            "achieved_tokens_per_s": round(t.sim_tokens / self.wall_s),
            "chatd_cpu_s": round(self.cpu_s, 3),
            "chatd_cpu_busy": round(self.cpu_s / self.wall_s, 3),
            "chatd_us_per_sim_token": round(self.cpu_s / tokens * 1e6, 1),
            "chatd_us_per_token_frame": round(self.cpu_s / max(1, t.token_frames) * 1e6, 1),
            "chatd_us_per_frame": round(self.cpu_s / frames * 1e6, 1),
            "chatd_ms_per_chat": round(self.cpu_s / max(1, t.chats) * 1e3, 3),
            "chatd_us_per_sim_token_by_round": per_token_us,
            "sim_cpu_busy": round(self.sim_cpu_s / self.wall_s, 3),
            "client_cpu_busy": round(self.client_cpu_s / self.wall_s, 3),
        }


async def measure_load(
    tallies: Sequence[Tally], sim: Process, params: Params, profile_out: Path | None
) -> dict[str, Any]:
    """Open every connection first (handshakes are not part of the number), warm
    up, then alternate the configurations' measured rounds ABBA."""
    chats = params.load_chats_per_connection
    async with contextlib.AsyncExitStack() as stack:
        sockets: dict[str, list[WebSocketConnection]] = {}
        for tally in tallies:
            url = tally.process.listening["ws_url"]
            sockets[tally.label] = [
                await stack.enter_async_context(open_websocket_url(url))
                for _ in range(params.load_connections)
            ]
        idle: dict[str, float] = {}
        for tally in tallies:  # the upstream pool fills here, too
            await load_round(sockets[tally.label], -1, 1)
        before = {t.label: t.process.cpu_seconds() for t in tallies}
        await trio.sleep(1.0)
        for tally in tallies:
            idle[tally.label] = round(tally.process.cpu_seconds() - before[tally.label], 3)

        for round_no in range(params.load_rounds):
            order = list(tallies) if round_no % 2 == 0 else list(reversed(tallies))
            for tally in order:
                cpu0, sim0 = tally.process.cpu_seconds(), sim.cpu_seconds()
                client0, wall0 = time.process_time(), time.perf_counter()
                totals = await load_round(sockets[tally.label], round_no, chats)
                wall = time.perf_counter() - wall0
                tally.add(
                    totals,
                    tally.process.cpu_seconds() - cpu0,
                    wall,
                    sim.cpu_seconds() - sim0,
                    time.process_time() - client0,
                )

        profile = None
        if profile_out is not None:
            profile = await profile_load(tallies[0], sockets[tallies[0].label], params, profile_out)
    return {
        "idle_chatd_cpu_s_per_s": idle,
        "configs": [t.result(params.load_connections, params.load_tokens_per_s) for t in tallies],
        "profile": profile,
    }


# --- profile ----------------------------------------------------------------------------


async def profile_load(
    tally: Tally, sockets: Sequence[WebSocketConnection], params: Params, out: Path
) -> dict[str, Any] | None:
    """Load rounds under py-spy attached to chatd; a summary of its samples."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    command = [py_spy, "record", "--pid", str(tally.process.pid), "--rate", "250",
               "--format", "raw", "--output", str(out)]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await trio.sleep(1.0)  # py-spy attaches
        for round_no in range(params.profile_rounds):
            await load_round(sockets, 1000 + round_no, params.load_chats_per_connection)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _out, err = await trio.to_thread.run_sync(spy.communicate, None, 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _out, err = spy.communicate()
    if not out.exists():
        return {"skipped": f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"}
    return summarise_profile(out)


def _frames(stack: str) -> Iterator[tuple[str, str]]:
    """(function, file) of each frame of a collapsed stack, outermost first."""
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        yield name, where.rsplit(":", 1)[0]


def _area(path: str) -> str:
    """Which part of the stack a file belongs to."""
    marker = "site-packages/"
    if marker in path:
        return path.split(marker, 1)[1].split("/", 1)[0]
    if "/chatd/" in path:
        parts = path.split("/chatd/", 1)[1].split("/")
        return "chatd." + parts[0].removesuffix(".py")
    if "/lib/python" in path:
        return "stdlib." + path.rsplit("/", 1)[1].removesuffix(".py")
    return path


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self time by library and by function, and inclusive time of chosen frames."""
    by_area: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = list(_frames(stack))
        name, path = frames[-1]
        by_area[_area(path)] += count
        self_time[f"{name} ({_area(path)})"] += count
        for key in {f"{n} ({_area(p)})" for n, p in frames}:
            inclusive[key] += count

    def share(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[k, round(v / max(1, total) * 100, 1)] for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "self_by_area_pct": share(by_area),
        "self_by_function_pct": share(self_time),
        "inclusive_by_function_pct": share(inclusive),
        "raw_file": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
    }


# --- report -----------------------------------------------------------------------------


def verdicts(ttft: Mapping[str, Any], load: Mapping[str, Any]) -> list[str]:
    lines = []
    b = ttft["paths"][PATH_B[0]]["client"]["p50_ms"]
    for kind, ratio in ttft["ratios_b_over_a"].items():
        a = ttft["paths"][kind]["client"]["p50_ms"]
        lines.append(
            f"TTFT tool_stream vs {kind} (B/A <= {TARGET_RATIO}): "
            f"{'met' if ratio['met'] else 'not met'}: {b} ms / {a} ms = "
            f"{ratio['ratio_of_medians']} (simulator floor {ratio['sim_floor_ratio']})"
        )
    merged = load["configs"][0]
    unmerged = load["configs"][1]
    per_token = merged["chatd_us_per_sim_token"]
    lines.append(
        f"Server CPU per streamed token (design.md: ~6-20 µs when merged): "
        f"{'met' if per_token <= DESIGN_US_PER_TOKEN else 'not met'}: "
        f"{per_token} µs/token, {merged['chatd_us_per_token_frame']} µs/token frame at "
        f"token_merge_ms={merged['token_merge_ms']:g}; {unmerged['chatd_us_per_sim_token']} "
        f"µs/token at token_merge_ms=0 "
        f"({round(unmerged['chatd_us_per_sim_token'] / max(per_token, 1e-9), 2)}x)"
    )
    return lines


def markdown(result: Mapping[str, Any]) -> str:
    p = result["params"]
    ttft = result["ttft"]
    load = result["load"]
    rows = "\n".join(
        f"| {kind} | {v['message']} | {v['client']['n']} | **{v['client']['p50_ms']}** "
        f"| {v['client']['p95_ms']} | {v['client']['min_ms']}–{v['client']['max_ms']} "
        f"| {v['server_p50_ms']} | {v['sim_floor_ms']} |"
        for kind, v in ttft["paths"].items()
    )
    ratios = "\n".join(
        f"| tool_stream / {kind} | **{r['ratio_of_medians']}** | {r['ratio_of_p95']} "
        f"| {r['sim_floor_ratio']} |"
        for kind, r in ttft["ratios_b_over_a"].items()
    )
    load_rows = "\n".join(
        f"| {c['token_merge_ms']:g} | {c['chats']} ({c['errors']} errors) | {c['sim_tokens']} "
        f"| {c['token_frames']} | {c['sim_tokens_per_token_frame']} "
        f"| {c['achieved_tokens_per_s']} / {c['demanded_tokens_per_s']} "
        f"| {c['chatd_cpu_busy']:.0%} | **{c['chatd_us_per_sim_token']}** "
        f"| {c['chatd_us_per_token_frame']} | {c['chatd_us_per_frame']} "
        f"| {c['chatd_ms_per_chat']} | {c['sim_cpu_busy']:.0%} | {c['client_cpu_busy']:.0%} |"
        for c in load["configs"]
    )
    by_round = "\n".join(
        f"- token_merge_ms={c['token_merge_ms']:g}: {c['chatd_us_per_sim_token_by_round']}"
        for c in load["configs"]
    )
    profile_md = ""
    profile = load.get("profile")
    if profile and "skipped" in profile:
        profile_md = f"\n## Profile\n\nSkipped: {profile['skipped']}\n"
    elif profile:

        def table(items: list[list[Any]]) -> str:
            return "\n".join(f"| {name} | {pct}% |" for name, pct in items)

        profile_md = (
            "\n## Where chatd's CPU goes (py-spy)\n\n"
            f"{profile['samples']} samples at 250 Hz over {p['profile_rounds']} extra load "
            f"round(s) at token_merge_ms={p['default_merge_ms']:g}, not counted above; "
            f"raw collapsed stacks in `{profile['raw_file']}`.\n\n"
            "Self time by library or chatd package:\n\n| area | share |\n|---|---|\n"
            f"{table(profile['self_by_area_pct'])}\n\n"
            "Self time by function:\n\n| function (area) | share |\n|---|---|\n"
            f"{table(profile['self_by_function_pct'])}\n\n"
            "Inclusive time by function:\n\n| function (area) | share |\n|---|---|\n"
            f"{table(profile['inclusive_by_function_pct'])}\n"
        )
    verdict_lines = "\n".join(f"- {line}" for line in result["verdicts"])
    return (
        "# Pipeline: time to first token by path, server CPU per token\n\n"
        f"`{result['command']}`; chatd and the simulated LLM each in their own process, "
        "this client over trio-websocket on loopback. Machine is shared and noisy: "
        "compare ratios from one run, not absolute times across runs.\n\n"
        f"## Verdicts\n\n{verdict_lines}\n\n"
        "## 1. Time to first token by path\n\n"
        f"Simulator ttft {p['ttft_ms']:g} ms, {p['ttft_tokens_per_s']:g} tokens/s. "
        f"{p['ttft_rounds']} rounds (after one warm-up), each sending the three "
        "requests side by side on three connections; TTFT is client-measured from "
        "sending `chat` to the first `token`, and each request is then cancelled. "
        "*Sim floor* is the simulator's own earliest possible first token for the path: "
        "the router call's last tool-call chunk (ttft + (units-1)/rate, arguments go "
        f"in {ARGUMENT_PIECE_CHARS}-character pieces), plus a second ttft for Path A.\n\n"
        "| path | message | n | p50 ms | p95 ms | min–max ms | server ttft p50 ms "
        "| sim floor ms |\n|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "| ratio | of medians | of p95 | sim floor |\n|---|---|---|---|\n"
        f"{ratios}\n\n"
        "## 2. Server CPU per streamed token\n\n"
        f"Simulator ttft {p['load_ttft_ms']:g} ms, {p['load_tokens_per_s']:g} tokens/s. "
        f"{p['load_connections']} WebSocket connections per chatd, each asking "
        f"{p['load_chats_per_connection']} chit-chat question(s) (direct path, 33–55 "
        f"tokens each) one after another per round; {p['load_rounds']} measured rounds "
        "per configuration, alternating ABBA between the two chatd processes, after one "
        "warm-up round. chatd CPU is utime+stime from /proc over the rounds only "
        "(connections were opened before). *Tokens* are the simulator's "
        "(`usage.completion_tokens`); *frames* are all WebSocket frames chatd sent "
        "(accepted, route, token, done).\n\n"
        "| token_merge_ms | chats | sim tokens | token frames | tokens/frame "
        "| tokens/s achieved / demanded | chatd CPU busy | chatd µs/token "
        "| µs/token frame | µs/frame (all) | chatd ms/chat | sim CPU busy "
        "| client CPU busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{load_rows}\n\n"
        f"chatd µs/token by round:\n\n{by_round}\n\n"
        f"Idle chatd CPU with the connections open (s per s): "
        f"{load['idle_chatd_cpu_s_per_s']}\n"
        f"{profile_md}\n## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


# --- main -------------------------------------------------------------------------------


def params_from(args: argparse.Namespace) -> Params:
    quick = bool(args.quick)
    return Params(
        quick=quick,
        ttft_rounds=args.ttft_rounds or (8 if quick else 30),
        ttft_ms=300.0,
        ttft_tokens_per_s=40.0,
        load_connections=args.connections,
        load_chats_per_connection=args.chats or (1 if quick else 3),
        load_rounds=args.rounds or (2 if quick else 4),
        load_ttft_ms=50.0,
        load_tokens_per_s=200.0,
        default_merge_ms=20.0,
        profile=bool(args.profile),
        profile_rounds=1 if quick else 3,
    )


async def run(
    params: Params, sim: Process, chatd: Process, unmerged: Process, profile_out: Path | None
) -> dict[str, Any]:
    control = sim.listening["url"].removesuffix("/v1")
    async with httpx.AsyncClient(base_url=control, timeout=10) as http:
        timing = {"ttft_ms": params.ttft_ms, "tokens_per_s": params.ttft_tokens_per_s}
        (await http.post("/_sim/timing", json=timing)).raise_for_status()
        ttft = await measure_ttft(chatd.listening["ws_url"], params)
        timing = {"ttft_ms": params.load_ttft_ms, "tokens_per_s": params.load_tokens_per_s}
        (await http.post("/_sim/timing", json=timing)).raise_for_status()
    tallies = [
        Tally("default", params.default_merge_ms, chatd),
        Tally("no-merge", 0.0, unmerged),
    ]
    load = await measure_load(tallies, sim, params, profile_out)
    return {"ttft": ttft, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument("--ttft-rounds", type=int, help="requests per path (default 30; quick 8)")
    parser.add_argument("--connections", type=int, default=100, help="concurrent chats in the load phase")
    parser.add_argument("--chats", type=int, help="chats per connection per load round (default 3; quick 1)")
    parser.add_argument("--rounds", type=int, help="measured load rounds per chatd (default 4; quick 2)")
    parser.add_argument("--profile", action="store_true", help="also profile chatd under load with py-spy")
    args = parser.parse_args()
    params = params_from(args)
    name = "pipeline" + ("-quick" if params.quick else "")
    RESULTS.mkdir(exist_ok=True)
    profile_out = RESULTS / f"{name}-profile.txt" if params.profile else None

    machine = describe_machine()
    machine["nproc"] = len(os.sched_getaffinity(0))
    machine["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        sim = start_process(
            "sim",
            ["sim-llm", "--port", "0", "--ttft-ms", f"{params.ttft_ms:g}",
             "--tokens-per-s", f"{params.ttft_tokens_per_s:g}"],
            workdir, clean_env(), stack,
        )  # fmt: skip
        llm_url = sim.listening["url"]
        serve = ["serve", "--port", "0", "--llm-url", llm_url]
        chatd = start_process(
            "chatd",
            serve,
            workdir,
            clean_env(
                CHATD_KB_PATH=str(workdir / "kb-default.sqlite3"),
                CHATD_LOG_FORMAT="json",
                CHATD_SERVER_TOKEN_MERGE_MS=f"{params.default_merge_ms:g}",
            ),
            stack,
        )
        unmerged = start_process(
            "chatd-no-merge",
            serve,
            workdir,
            clean_env(
                CHATD_KB_PATH=str(workdir / "kb-no-merge.sqlite3"),
                CHATD_LOG_FORMAT="json",
                CHATD_SERVER_TOKEN_MERGE_MS="0",
            ),
            stack,
        )
        try:
            measured = trio.run(run, params, sim, chatd, unmerged, profile_out)
        except BaseException:
            for process in (sim, chatd, unmerged):
                print(f"--- {process.name} log tail ---\n{process.log_tail()}", file=sys.stderr)
            raise

    result: dict[str, Any] = {
        "benchmark": "pipeline: TTFT by path, server CPU per streamed token",
        "command": "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:]),
        "params": attrs.asdict(params),
        **measured,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": machine,
    }
    result["verdicts"] = verdicts(result["ttft"], result["load"])
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    md = markdown(result)
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
