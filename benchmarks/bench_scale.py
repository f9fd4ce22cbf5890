"""Scaling out on Redis: one chatd process against two, and what a Redis call costs (issue 7).

``chatd serve --workers 1`` against ``--workers 2``, side by side on one redis-server and one
simulated LLM, in alternating rounds at a saturating and then a light load; then
``RedisClient.call`` (a worker thread) against plain redis-py calls. The report says how
each is measured. Results go to benchmarks/results/scale{,-quick}.{json,md}.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis
import trio
from trio_websocket import WebSocketConnection

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import processes
from loadgen.chat import Replies, ask, open_connections
from loadgen.cpu import machine_cpu_seconds
from loadgen.pipeline_questions import unique_chit_chat
from loadgen.pipeline_stats import percentile
from loadgen.script import RunRecord, provenance_markdown, script_parser
from machine import machine_markdown, write_results

from chatd.config import RedisSettings
from chatd.stores.redis.client import RedisClient, open_redis
from chatd.testing_redis import RedisServer

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.7
CHAT_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30.0
IDLE_S = 2.0
KEY = "bench-offload:key"
ROUND_KEYS = ("wall_s", "answers_per_s", "tokens_per_s", "chatd_cores_busy", "machine_cores_busy")


@attrs.frozen(kw_only=True)
class Params:
    """What one run does: ``users`` and ``rounds`` per deployment at the saturating load,
    ``offload_calls`` per row and repetition of the offload measurement."""

    quick: bool
    sim_ttft_ms: float = 20.0
    sim_tokens_per_s: float = 500.0
    users: int
    rounds: int
    round_s: float
    light_users: int = 4
    light_rounds: int
    light_round_s: float
    offload_calls: int
    offload_repeats: int
    concurrencies: tuple[int, ...] = (1, 8, 32)
    pipeline_commands: int = 10


# --- 1. one process against two ---------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if it is gone: with
    the pid, this names one process even once pids are reused."""
    try:
        return int(processes.proc_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


@attrs.define
class Deployment:
    """One ``chatd serve --workers N``: its first process (the supervisor when N > 1) and
    its workers' start times (see :func:`start_ticks`) by pid."""

    label: str
    workers: int
    main: processes.Process
    worker_starts: dict[int, int | None] = attrs.field(factory=dict)

    @property
    def pids(self) -> list[int]:
        return [self.main.pid, *self.worker_starts]

    @property
    def ws_url(self) -> str:
        return str(self.main.listening["ws_url"])

    def cpu_seconds(self) -> float:
        return sum(processes.pid_cpu_seconds(pid) for pid in self.pids)

    def wait_ready(self) -> None:
        """Until every process has said ``using LLM`` (the supervisor's ``listening`` line
        comes before its workers even start), noting each worker as it starts."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            records = self.main.log_records()
            for pid in (int(r["pid"]) for r in records if r.get("event") == "worker started"):
                self.worker_starts.setdefault(pid, start_ticks(pid))
            if sum(r.get("event") == "using LLM" for r in records) == self.workers:
                return
            if self.main.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not get ready:\n{self.main.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the supervisor (it passes it on and waits for its workers, which run
        in sessions of their own), then SIGKILL to any worker still there: the same pid
        *and* start time, never a process that reused the pid."""
        if self.main.popen.poll() is None:
            self.main.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.main.popen.wait(15)
        for pid, started in self.worker_starts.items():
            if started is not None and start_ticks(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.main.kill()


@attrs.frozen
class Rig:
    """The processes that are not chatd (their CPU counts against the machine too), and
    a connection to Redis to read its command counts."""

    sim: processes.Process
    redis_pid: int
    redis: redis.Redis

    def clocks(self, chatd_pids: Sequence[int] = ()) -> dict[str, float]:
        """CPU seconds so far of each chatd process (``chatd 0`` the first), the rig's, this
        client's, and the whole machine's (busy, and stolen)."""
        cpu = {f"chatd {i}": processes.pid_cpu_seconds(pid) for i, pid in enumerate(chatd_pids)}
        cpu["sim"], cpu["redis"] = self.sim.cpu_seconds(), processes.pid_cpu_seconds(self.redis_pid)
        cpu["client"] = time.process_time()
        cpu["machine"], cpu["stolen"] = machine_cpu_seconds()
        return cpu

    def redis_commands(self) -> collections.Counter[str]:
        """Commands Redis has run since it started, by name (a pipeline's one by one)."""
        stats = self.redis.info("commandstats")
        counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        return collections.Counter(counts)


@attrs.frozen
class Round:
    """What one deployment's users did in one round, or in several summed."""

    replies: Replies = attrs.field(factory=Replies)
    seconds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """``wall`` and the CPU of each of :meth:`Rig.clocks`, from the start to the last answer."""
    redis_commands: collections.Counter[str] = attrs.field(factory=collections.Counter)

    @classmethod
    def total(cls, rounds: Iterable[Round]) -> Round:
        total = cls()
        for r in rounds:
            total.replies.merge(r.replies)
            total.seconds.update(r.seconds)
            total.redis_commands.update(r.redis_commands)
        return total

    def figures(self, sim_ttft_ms: float) -> dict[str, Any]:
        t, s, wall = self.replies, self.seconds, self.seconds["wall"]
        by_process = [v for name, v in s.items() if name.startswith("chatd")]
        chatd, rig = sum(by_process), {name: s[name] for name in ("sim", "redis", "client")}
        rig_total, answers, commands = sum(rig.values()), max(1, t.answers), +self.redis_commands
        overhead = [ttft * 1000 - sim_ttft_ms for ttft in t.ttft_s] or [float("nan")]
        server_overhead = [ms - sim_ttft_ms for ms in t.server_ttft_ms] or [float("nan")]

        def cores(cpu_s: float) -> float:
            return round(cpu_s / wall, 2)

        return {
            "wall_s": round(wall, 3),
            "answers": t.answers,
            "tokens": t.tokens,
            "token_frames": t.token_frames,
            "errors": sum(t.errors.values()),
            "error_codes": dict(t.errors),
            "cached": t.cached,
            "shared": t.shared,
            "answers_per_s": round(t.answers / wall, 1),
            "tokens_per_s": round(t.tokens / wall),
            "ttft_overhead_p50_ms": round(statistics.median(overhead), 1),
            "ttft_overhead_p95_ms": round(percentile(overhead, 95), 1),
            "server_ttft_overhead_p50_ms": round(statistics.median(server_overhead), 1),
            "server_ttft_overhead_p95_ms": round(percentile(server_overhead, 95), 1),
            "chatd_cpu_s": round(chatd, 3),
            "chatd_ms_per_answer": round(chatd / answers * 1000, 2),
            "redis_commands_per_answer": round(commands.total() / answers, 1),
            "redis_commands_per_answer_top": [
                [name, round(n / answers, 2)] for name, n in commands.most_common(6)
            ],
            "chatd_cpu_s_per_1000_tokens": round(chatd / max(1, t.tokens) * 1000, 4),
            "chatd_cores_busy": cores(chatd),
            "chatd_cores_busy_by_process": [cores(c) for c in by_process],
            "rig_cores_busy": {name: cores(v) for name, v in rig.items()},
            "machine_cores_busy": cores(s["machine"]),
            "machine_cores_stolen": cores(s["stolen"]),
            "rig_share_of_machine": round(rig_total / max(1e-9, s["machine"]), 3),
            "chatd_share_of_machine": round(chatd / max(1e-9, s["machine"]), 3),
            "unattributed_cores_busy": cores(s["machine"] - chatd - rig_total),
        }


async def user(
    ws: WebSocketConnection, questions: Iterator[int], stop_at: float, replies: Replies
) -> None:
    """Ask unique chit-chat questions one after another until ``stop_at``; the last one is
    read to its end."""
    while time.perf_counter() < stop_at:
        n = next(questions)
        replies.add(await ask(ws, f"q{n}", unique_chit_chat(n), timeout_s=CHAT_TIMEOUT_S))


async def run_round(
    deployment: Deployment,
    sockets: Sequence[WebSocketConnection],
    seconds: float,
    questions: Iterator[int],
    rig: Rig,
) -> Round:
    """Every user on ``sockets`` asks for ``seconds``."""
    commands0, clocks0 = rig.redis_commands(), rig.clocks(deployment.pids)
    done = Round()
    wall0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(user, ws, questions, wall0 + seconds, done.replies)
    done.seconds["wall"] = time.perf_counter() - wall0
    done.seconds.update({k: v - clocks0[k] for k, v in rig.clocks(deployment.pids).items()})
    done.redis_commands.update(rig.redis_commands() - commands0)
    done.redis_commands["info"] -= 1  # our own reading
    return done


def summary(
    deployment: Deployment, users: int, rounds: Sequence[Round], sim_ttft_ms: float
) -> dict[str, Any]:
    """A deployment's figures over its rounds at one load, and a few of them by round."""
    by_round = [r.figures(sim_ttft_ms) for r in rounds]
    return {
        "label": deployment.label,
        "processes": deployment.workers,
        "command": f"chatd serve --workers {deployment.workers}",
        "users": users,
        "rounds": [{key: figures[key] for key in ROUND_KEYS} for figures in by_round],
        **Round.total(rounds).figures(sim_ttft_ms),
    }


async def measure_scale(
    deployments: Sequence[Deployment], rig: Rig, params: Params
) -> dict[str, Any]:
    """Open every connection first, warm up, then alternate the deployments' rounds
    (order reversed every other round), saturating and then light."""
    questions = itertools.count()
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            d.label: await open_connections(stack, d.ws_url, params.users) for d in deployments
        }
        for d in deployments:  # pools, connections to Redis and the simulator
            await run_round(d, sockets[d.label], 2.0, questions, rig)
        idle0 = {d.label: d.cpu_seconds() for d in deployments}
        await trio.sleep(IDLE_S)
        idle = {d.label: round((d.cpu_seconds() - idle0[d.label]) / IDLE_S, 3) for d in deployments}
        phases = {}
        for phase, users, rounds, seconds in (
            ("saturating", params.users, params.rounds, params.round_s),
            ("light", params.light_users, params.light_rounds, params.light_round_s),
        ):
            done: dict[str, list[Round]] = {d.label: [] for d in deployments}
            for round_no in range(rounds):
                for d in deployments if round_no % 2 == 0 else deployments[::-1]:
                    sock = sockets[d.label][:users]
                    done[d.label].append(await run_round(d, sock, seconds, questions, rig))
            phases[phase] = [
                summary(d, users, done[d.label], params.sim_ttft_ms) for d in deployments
            ]
    one, two = phases["saturating"]
    return {
        "phases": phases,
        "ratio_answers_per_s": round(two["answers_per_s"] / one["answers_per_s"], 3),
        "ratio_tokens_per_s": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "ratio_by_round": [
            round(b["answers_per_s"] / a["answers_per_s"], 3)
            for a, b in zip(one["rounds"], two["rounds"], strict=True)
        ],
        # Each of two chatd processes as busy as the one was, at the CPU per token
        # measured with two: what two cores free of the rig would give.
        "ratio_implied_by_cpu": round(
            2 * one["chatd_cpu_s_per_1000_tokens"] / two["chatd_cpu_s_per_1000_tokens"], 2
        ),
        "idle_chatd_cores_busy": idle,
        "questions_asked": next(questions),
    }


# --- 2. thread-offload cost per Redis call ----------------------------------------------


def pipelined(commands: int) -> Callable[[redis.Redis], Any]:
    def call(r: redis.Redis) -> Any:
        pipe = r.pipeline(transaction=False)
        for _ in range(commands):
            pipe.get(KEY)
        return pipe.execute()

    return call


@attrs.define
class Row:
    """One way of calling Redis over its repetitions: in a plain loop with no threads
    (``sync``), or through ``RedisClient.call``, ``concurrency`` at a time (``offload``)."""

    name: str
    command: str
    mode: str
    concurrency: int
    call: Callable[[redis.Redis], Any]
    commands_per_call: int = 1
    latencies_s: list[float] = attrs.field(factory=list)
    us_per_call_by_repeat: list[float] = attrs.field(factory=list)
    cpu_us_per_call_by_repeat: list[float] = attrs.field(factory=list)

    async def run(self, plain: redis.Redis, client: RedisClient, calls: int, keep: bool) -> None:
        """``calls`` calls, and if ``keep`` their times (the CPU: all of this process's)."""
        latencies: list[float] = []
        left = iter(range(calls))

        async def caller() -> None:
            for _ in left:
                started = time.perf_counter()
                await client.call(self.call)
                latencies.append(time.perf_counter() - started)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        if self.mode == "sync":
            for _ in range(calls):
                started = time.perf_counter()
                self.call(plain)
                latencies.append(time.perf_counter() - started)
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(self.concurrency):
                    nursery.start_soon(caller)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if keep:
            self.latencies_s.extend(latencies)
            self.us_per_call_by_repeat.append(round(wall / calls * 1e6, 1))
            self.cpu_us_per_call_by_repeat.append(round(cpu / calls * 1e6, 1))

    def result(self) -> dict[str, Any]:
        """Times per call are the median of the repetitions: one repetition hit by another
        process's burst moves it little."""
        us = statistics.median(self.us_per_call_by_repeat)
        return {
            "name": self.name,
            "command": self.command,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "commands_per_call": self.commands_per_call,
            "calls": len(self.latencies_s),
            "us_per_call": round(us, 1),
            "us_per_command": round(us / self.commands_per_call, 1),
            "calls_per_s": round(1e6 / us),
            "latency_p50_us": round(statistics.median(self.latencies_s) * 1e6, 1),
            "latency_p95_us": round(percentile(self.latencies_s, 95) * 1e6, 1),
            "cpu_us_per_call": round(statistics.median(self.cpu_us_per_call_by_repeat), 1),
            "us_per_call_by_repeat": self.us_per_call_by_repeat,
            "cpu_us_per_call_by_repeat": self.cpu_us_per_call_by_repeat,
        }


async def measure_offload(redis_url: str, params: Params, rig: Rig) -> dict[str, Any]:
    """Every row in turn, ``offload_repeats`` times, after a warm-up of each; and how
    busy the rest of the machine was meanwhile (nothing of ours but Redis should be)."""
    n, rows = params.pipeline_commands, []
    for command, call in (("PING", lambda r: r.ping()), ("GET", lambda r: r.get(KEY))):
        rows.append(Row(f"{command}, plain loop", command, "sync", 1, call))
        for c in params.concurrencies:
            rows.append(Row(f"{command}, RedisClient.call", command, "offload", c, call))
    rows.append(Row(f"pipeline of {n} GETs, plain loop", "GET", "sync", 1, pipelined(n), n))
    for c in (1, max(params.concurrencies)):
        name = f"pipeline of {n} GETs, RedisClient.call"
        rows.append(Row(name, "GET", "offload", c, pipelined(n), n))
    plain = redis.Redis.from_url(redis_url, socket_timeout=2)
    plain.set(KEY, "x" * 100)
    settings = RedisSettings(url=redis_url)
    async with open_redis(settings) as client:
        for row in rows:  # warm-up, not counted: threads, pool connections
            await row.run(plain, client, max(100, params.offload_calls // 10), keep=False)
        clocks0, wall0 = rig.clocks(), time.perf_counter()
        for _ in range(params.offload_repeats):
            for row in rows:
                await row.run(plain, client, params.offload_calls, keep=True)
        wall, clocks1 = time.perf_counter() - wall0, rig.clocks()
    plain.close()
    results = [row.result() for row in rows]
    sync = {r["command"]: r for r in results if r["mode"] == "sync" and r["commands_per_call"] == 1}
    for r in results:
        if r["mode"] == "offload" and r["commands_per_call"] == 1:
            base = sync[r["command"]]
            r["offload_overhead_us"] = round(r["us_per_call"] - base["us_per_call"], 1)
            r["offload_cpu_overhead_us"] = round(r["cpu_us_per_call"] - base["cpu_us_per_call"], 1)
    busy = {k: round((clocks1[k] - clocks0[k]) / wall, 2) for k in ("machine", "client", "redis")}
    return {
        "rows": results,
        "threads": settings.threads,
        "wall_s": round(wall, 1),
        "machine_cores_busy": busy["machine"],
        "this_process_cores_busy": busy["client"],
        "redis_cores_busy": busy["redis"],
        "other_cores_busy": round(busy["machine"] - busy["client"] - busy["redis"], 2),
    }


# --- report -----------------------------------------------------------------------------


def verdicts(scale: Mapping[str, Any]) -> list[str]:
    """Issue 7's throughput target: met or not, with the reason in numbers."""
    one, two = scale["phases"]["saturating"]
    ratio, pairs, rig = scale["ratio_answers_per_s"], scale["ratio_by_round"], two["rig_cores_busy"]
    met = ratio >= TARGET_RATIO
    lines = [
        f"Throughput, 2 processes vs 1 on Redis (issue 7 expects >= {TARGET_RATIO}x on 2 cores): \
**{'met' if met else 'not met'}**: {ratio}x answers/s ({two['answers_per_s']} vs \
{one['answers_per_s']}; {scale['ratio_tokens_per_s']}x tokens/s; round pairs {min(pairs)}–\
{max(pairs)}x), {two['errors'] + one['errors']} errors."
    ]
    why = f"""\
Why: the machine has {scale["nproc"]} cores and chatd does not get them all. With 2 processes \
the machine was {two["machine_cores_busy"]} cores busy: chatd {two["chatd_cores_busy"]} (by \
process, supervisor first: {two["chatd_cores_busy_by_process"]}), the rig \
{round(sum(rig.values()), 2)} (simulator {rig["sim"]}, this load generator {rig["client"]}, \
Redis {rig["redis"]}: {two["rig_share_of_machine"]:.0%} of the busy CPU), \
{two["unattributed_cores_busy"]} unattributed (other work on the machine, kernel). With 1 \
process chatd was {one["chatd_cores_busy"]} cores busy. So the ratio is chatd's CPU, \
{round(two["chatd_cores_busy"] / one["chatd_cores_busy"], 2)}x ({two["chatd_cores_busy"]} vs \
{one["chatd_cores_busy"]} cores), times its CPU per answer, \
{round(one["chatd_ms_per_answer"] / two["chatd_ms_per_answer"], 2)}x less \
({one["chatd_ms_per_answer"]} vs {two["chatd_ms_per_answer"]} ms, \
{one["chatd_cpu_s_per_1000_tokens"]} vs {two["chatd_cpu_s_per_1000_tokens"]} s per 1,000 \
tokens, with {one["users"]} vs {one["users"] // 2} users per process). Two processes each as \
busy as the one, at the CPU per token measured with two, would give \
~{scale["ratio_implied_by_cpu"]}x: a projection for two cores free of the rig, not a \
measurement."""
    if not met:
        lines.append(why)
    elif scale["nproc"] <= 2:
        lines.append(why.replace("Why: ", "Note: ", 1))
    if one["chatd_cores_busy"] < 0.9:
        lines.append(
            f"The single process was only {one['chatd_cores_busy']} cores busy, short of the \
one core it could use, while {one['unattributed_cores_busy']} cores went to work outside this \
benchmark: the machine's other load held the 1-process baseline down, which flatters the \
ratio. Compare the round pairs below whose machine cores busy is near chatd's plus the rig's \
(a quiet machine)."
        )
    return lines


def scale_rows(configs: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(
        f"| {c['processes']} | `{c['command']}` | {c['users']} | **{c['answers_per_s']}** "
        f"| {c['tokens_per_s']} | **{c['ttft_overhead_p50_ms']}** / {c['ttft_overhead_p95_ms']} "
        f"| {c['server_ttft_overhead_p50_ms']} / {c['server_ttft_overhead_p95_ms']} "
        f"| {c['chatd_cpu_s_per_1000_tokens']} | {c['chatd_ms_per_answer']} "
        f"| {c['chatd_cores_busy']} {c['chatd_cores_busy_by_process']} "
        f"| {c['redis_commands_per_answer']} | {c['errors']} {c['error_codes'] or ''} "
        f"| {c['cached']} / {c['shared']} |"
        for c in configs
    )


SCALE_HEADER = """\
| processes | started as | users | answers/s | tokens/s | TTFT overhead p50 / p95 ms (client) \
| TTFT overhead p50 / p95 ms (chatd) | chatd CPU s / 1,000 tokens | chatd CPU ms / answer \
| chatd cores busy [by process] | Redis commands / answer | errors | cached / shared |
|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def markdown(result: Mapping[str, Any]) -> str:
    """The results file a person reads."""
    p, s, o, machine = result["params"], result["scale"], result["offload"], result["machine"]
    phases, n, lines = s["phases"], p["pipeline_commands"], "\n".join
    configs = [(phase, c) for phase in phases for c in phases[phase]]
    get = {
        (r["mode"], r["concurrency"], r["commands_per_call"]): r
        for r in o["rows"]
        if r["command"] == "GET"
    }
    sync_get, offload_get, piped = get["sync", 1, 1], get["offload", 1, 1], get["offload", 1, n]
    by_round = lines(
        f"- {c['processes']} process(es): {[r['answers_per_s'] for r in c['rounds']]} "
        f"answers/s, chatd cores busy {[r['chatd_cores_busy'] for r in c['rounds']]}, "
        f"machine cores busy {[r['machine_cores_busy'] for r in c['rounds']]}"
        for c in phases["saturating"]
    )
    commands = lines(
        f"- {phase}, {c['processes']} process(es): "
        + ", ".join(f"{name} {count}" for name, count in c["redis_commands_per_answer_top"])
        for phase, c in configs
    )
    machine_rows = lines(
        f"| {phase} | {c['processes']} | {c['machine_cores_busy']} | {c['chatd_cores_busy']} "
        f"| {c['rig_cores_busy']['sim']} | {c['rig_cores_busy']['client']} "
        f"| {c['rig_cores_busy']['redis']} | {c['rig_share_of_machine']:.0%} "
        f"| {c['unattributed_cores_busy']} | {c['machine_cores_stolen']} |"
        for phase, c in configs
    )
    offload_rows = lines(
        f"| {r['name']} | {r['concurrency']} | {r['calls']} | **{r['us_per_call']}** "
        f"| {r['us_per_command']} | {r['calls_per_s']} "
        f"| {r['latency_p50_us']} / {r['latency_p95_us']} | {r['cpu_us_per_call']} "
        f"| {r.get('offload_overhead_us', '')} | {r.get('offload_cpu_overhead_us', '')} |"
        for r in o["rows"]
    )
    by_repeat = lines(
        f"- {r['name']}, concurrency {r['concurrency']}: {r['us_per_call_by_repeat']} "
        f"({r['cpu_us_per_call_by_repeat']})"
        for r in o["rows"]
    )
    return f"""\
# Scale-out: 1 chatd process against 2 on Redis, and the cost of a Redis call

`{result["command"]}` ({result["elapsed_s"]} s); {provenance_markdown(result["chatd"])}. \
Everything runs on this one machine: Redis, the simulated LLM, chatd and this load generator \
(Python, trio-websocket) share its {machine["nproc"]} cores. The machine is shared with other \
engineers' test runs and is noisy (load average {machine["loadavg_at_start"]} at the start, \
{result["loadavg_at_end"]} at the end): compare ratios from one run, not absolute figures \
across runs.

## Verdicts

{lines(f"- {line}" for line in result["verdicts"])}

## 1. One process against two, on one Redis

Simulator ttft {p["sim_ttft_ms"]:g} ms, {p["sim_tokens_per_s"]:g} tokens/s; chit-chat \
questions, answered directly (33–55 tokens), each asked once only, so no answer is cached or \
shared (checked: the last column). Both deployments run side by side on one Redis (prefixes of \
their own) and one simulator: `chatd serve --workers 1` is one process; `chatd serve \
--workers 2` is a supervisor and two workers listening on one port with SO_REUSEPORT, so the \
kernel spreads the connections. Closed loop, no think time: each user (one WebSocket \
connection, opened before the rounds) sends its next question when the last one is done. \
Saturating: {p["users"]} users per deployment, {p["rounds"]} rounds of {p["round_s"]:g} s \
each; light: {p["light_users"]} users, {p["light_rounds"]} rounds of {p["light_round_s"]:g} s; \
rounds alternate between the deployments, order reversed every other round, after a 2 s \
warm-up each. *TTFT overhead* is TTFT minus the simulator's {p["sim_ttft_ms"]:g} ms: \
client-measured (`chat` sent to first `token` frame, so queueing in chatd counts), and as chatd \
reports it (`timings.ttft_ms`). chatd CPU is utime+stime of every process of the deployment \
(supervisor included) over the rounds.

Saturating ({p["users"]} users):

{SCALE_HEADER}
{scale_rows(phases["saturating"])}

Light ({p["light_users"]} users; the kernel may not spread so few connections evenly):

{SCALE_HEADER}
{scale_rows(phases["light"])}

Throughput ratio 2/1: **{s["ratio_answers_per_s"]}x** answers/s, {s["ratio_tokens_per_s"]}x \
tokens/s; by round pair {s["ratio_by_round"]}. Saturating rounds:

{by_round}

Redis commands per answer, the most frequent (from `INFO commandstats` over each \
deployment's rounds; only one deployment runs at a time):

{commands}

Idle chatd, connections open (cores busy over {IDLE_S:g} s): {s["idle_chatd_cores_busy"]}. \
Warning and error log lines by event: {s["chatd_log_warnings"]}.

Where the machine's CPU went (cores busy, out of {machine["nproc"]}; *rig* is the simulator, \
this load generator and Redis; *unattributed* is the machine's busy time not in any of our \
processes: other people's work, kernel threads; within ±0.03 it is accounting noise):

| load | processes | machine | chatd | simulator | load generator | Redis \
| rig share of busy CPU | unattributed | stolen |
|---|---|---|---|---|---|---|---|---|---|
{machine_rows}

## 2. Thread-offload cost per Redis call

In this process, against the same redis-server (idle, loopback). *Plain loop*: redis-py's \
synchronous client called in a loop on the main thread, no threads. *RedisClient.call*: \
chatd's path, `trio.to_thread.run_sync` under a CapacityLimiter of {o["threads"]} with a \
BlockingConnectionPool as large, through the redis breaker; *concurrency* is how many trio \
tasks call at once. GET reads a 100-byte value. Each row: {p["offload_calls"]} calls, \
{p["offload_repeats"]} time(s), the rows in turn, after a warm-up. *µs/call* is wall time over \
calls (1 / throughput) and *CPU µs/call* this process's CPU (all threads; Redis's own \
excluded) over calls, each the median of the repetitions; latency is each call's own, over \
all of them; *overhead* is the offloaded row minus the plain loop for the same command. Over \
these rows the machine was {o["machine_cores_busy"]} cores busy: this process \
{o["this_process_cores_busy"]}, Redis {o["redis_cores_busy"]}, everything else \
{o["other_cores_busy"]} (other people's work, kernel), which competes with these loops for the \
cores.

| call | concurrency | calls | µs/call | µs/command | calls/s | latency p50 / p95 µs \
| CPU µs/call | offload overhead µs/call | CPU overhead µs/call |
|---|---|---|---|---|---|---|---|---|---|
{offload_rows}

A GET costs {sync_get["us_per_call"]} µs in a plain loop and {offload_get["us_per_call"]} µs \
through a thread; {n} GETs pipelined in one call cost {piped["us_per_call"]} µs, \
{piped["us_per_command"]} µs per command: \
{round(offload_get["us_per_call"] * n / piped["us_per_call"], 1)}x cheaper than {n} separate \
calls.

µs/call by repetition (CPU µs/call):

{by_repeat}

## Machine

{machine_markdown(machine)}
"""


async def measure(
    params: Params, deployments: Sequence[Deployment], rig: Rig, redis_url: str
) -> dict[str, Any]:
    offload = await measure_offload(redis_url, params, rig)
    return {"scale": await measure_scale(deployments, rig, params), "offload": offload}


def main() -> None:
    parser = script_parser(__doc__, "a short run (under 40 s)")
    users_help = "users per deployment in the saturating rounds"
    parser.add_argument("--users", type=int, default=64, help=users_help)
    parser.add_argument("--rounds", type=int, help="saturating rounds each (default 4; quick 2)")
    parser.add_argument("--round-s", type=float, help="seconds a round (default 8; quick 3)")
    args = parser.parse_args()
    quick = bool(args.quick)
    params = Params(
        quick=quick,
        users=args.users,
        rounds=args.rounds or (2 if quick else 4),
        round_s=args.round_s or (3.0 if quick else 8.0),
        light_rounds=1 if quick else 2,
        light_round_s=2.0 if quick else 4.0,
        offload_calls=500 if quick else 2000,
        offload_repeats=1 if quick else 5,
    )
    record = RunRecord.start(__file__, ROOT)
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis")
        server.start()
        stack.callback(server.stop)
        watcher = stack.enter_context(redis.Redis.from_url(server.url, socket_timeout=5))
        redis_pid = int(watcher.info("server")["process_id"])
        sim = processes.start_sim(workdir, ROOT, params.sim_ttft_ms, params.sim_tokens_per_s, stack)
        deployments = []
        for label, workers in (("one-process", 1), ("two-processes", 2)):  # Redis prefixes apart
            env = {"CHATD_REDIS_URL": server.url, "CHATD_REDIS_PREFIX": f"bench-{label}:"}
            flags = ["--workers", str(workers)]
            chatd = processes.start_chatd(
                label, sim.listening["url"], workdir, ROOT, stack, env, flags
            )
            deployments.append(Deployment(label, workers, chatd))
            stack.callback(deployments[-1].stop)
            deployments[-1].wait_ready()
        rig = Rig(sim, redis_pid, watcher)
        with processes.log_tails_on_failure((sim, *(d.main for d in deployments))):
            measured = trio.run(measure, params, deployments, rig, server.url)
        measured["scale"]["chatd_log_warnings"] = {
            d.label: dict(d.main.log_events(("warning", "error", "critical"))) for d in deployments
        }
    measured["scale"]["nproc"] = record.machine["nproc"]
    benchmark = "scale-out: 1 vs 2 chatd processes on Redis; Redis thread-offload cost"
    result = record.result(benchmark, params, measured, loadavg_at_end=True)
    result["verdicts"] = verdicts(result["scale"])
    write_results(RESULTS, "scale" + ("-quick" if quick else ""), result, markdown(result))


if __name__ == "__main__":
    main()
