"""The whole pipeline, end to end: time to first token by path, server CPU per token.

chatd (``python -m chatd serve``) and the simulated LLM (``python -m chatd sim-llm``) run as
processes of their own; this process is their client. Part 1 times Path B's first token
against Path A's (target: the ratio of medians B/A at most 0.5); part 2 divides chatd's CPU
under load by the tokens it streams, with token merging on and off. ``--profile`` adds load
rounds under py-spy. Results go to benchmarks/results/pipeline{,-quick}.{json,md}, the raw
collapsed stacks to pipeline{,-quick}-profile.txt. The report says how each figure is taken.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import WebSocketConnection

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import profiling
from loadgen.chat import ask, on_every_connection, open_connections
from loadgen.cpu import Usage
from loadgen.pipeline_load import Tally, load_round
from loadgen.pipeline_questions import PATH_A, PATH_B, floor_ms, unique_question
from loadgen.pipeline_stats import PIPELINE_FIGURES, latency_ms
from loadgen.processes import Process, log_tails_on_failure, start_chatd, start_sim
from loadgen.script import RunRecord, script_parser
from machine import write_results
from reports.pipeline import markdown

# comparisons.py (run by targets.py) imports this from here.
__all__ = ["measure_ttft"]

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 0.5
# design.md ("Known traps"): ~6-20 µs per upstream token when tokens read together go out
# together. The issue sets no number for CPU per token: this is the design's own expectation.
DESIGN_US_PER_TOKEN = 20.0


@attrs.frozen(kw_only=True)
class Params:
    """What one run does."""

    quick: bool
    ttft_rounds: int
    ttft_ms: float = 300.0
    ttft_tokens_per_s: float = 40.0
    load_connections: int
    load_chats_per_connection: int
    small_connections: int
    load_rounds: int
    load_ttft_ms: float = 50.0
    load_tokens_per_s: float = 200.0
    default_merge_ms: float = 50.0
    profile: bool
    profile_rounds: int


# --- 1. time to first token by path -----------------------------------------------------


async def measure_ttft(
    ws_url: str, rounds: int, ttft_ms: float, tokens_per_s: float
) -> dict[str, Any]:
    """``rounds`` (after a warm-up) of one request per kind, side by side on a connection
    per kind, each cancelled at its first token; the simulator at ``ttft_ms``, ``tokens_per_s``."""
    kinds = {PATH_B[0]: PATH_B[1], **PATH_A}
    client: dict[str, list[float]] = {kind: [] for kind in kinds}
    server: dict[str, list[float]] = {kind: [] for kind in kinds}
    wrong_paths: list[str] = []

    async def one(ws: WebSocketConnection, index: int, round_no: int) -> None:
        kind = list(kinds)[index]
        message = unique_question(round_no + 1, kinds[kind])
        reply = await ask(
            ws, f"{kind}-{round_no}", message, timeout_s=60, cancel_at_first_token=True
        )
        end = reply.terminal
        if reply.ttft_s is None:
            raise RuntimeError(f"{kind}-{round_no} ended without a token: {end}")
        expected = "tool_stream" if kind == PATH_B[0] else "tools"
        reused = end.get("cached") or end.get("shared")
        if reply.path != expected or end["type"] != "done" or reused:
            wrong_paths.append(f"{kind}: {message!r}: path {reply.path}, terminal {end}")
        if round_no >= 0:  # round -1 warms up
            client[kind].append(reply.ttft_s)
            if end.get("timings", {}).get("ttft_ms") is not None:
                server[kind].append(end["timings"]["ttft_ms"] / 1000)

    async with contextlib.AsyncExitStack() as stack:
        sockets = await open_connections(stack, ws_url, len(kinds))
        for round_no in range(-1, rounds):
            await on_every_connection(sockets, one, round_no)
    if wrong_paths:
        problems = "\n".join(wrong_paths[:10])
        raise RuntimeError(f"requests took the wrong path, or were cached or shared:\n{problems}")
    paths = {}
    for kind, question in kinds.items():
        _tool, router_ms = floor_ms(unique_question(0, question), ttft_ms, tokens_per_s)
        paths[kind] = {
            "message": unique_question(0, question),
            "client": latency_ms(client[kind], PIPELINE_FIGURES),
            "server_p50_ms": round(statistics.median(server[kind]) * 1000, 1),
            "sim_floor_ms": round(router_ms + (0 if kind == PATH_B[0] else ttft_ms), 1),
            "samples_ms": [round(t * 1000, 1) for t in client[kind]],
        }
    b = paths[PATH_B[0]]
    ratios = {}
    for kind in PATH_A:
        a = paths[kind]
        ratios[kind] = {
            "ratio_of_medians": round(b["client"]["p50_ms"] / a["client"]["p50_ms"], 3),
            "ratio_of_p95": round(b["client"]["p95_ms"] / a["client"]["p95_ms"], 3),
            "sim_floor_ratio": round(b["sim_floor_ms"] / a["sim_floor_ms"], 3),
            "met": b["client"]["p50_ms"] / a["client"]["p50_ms"] <= TARGET_RATIO,
        }
    return {"paths": paths, "ratios_b_over_a": ratios}


# --- 2. server CPU per streamed token ---------------------------------------------------


def load_tallies(p: Params) -> list[Tally]:
    """The chatd configurations of the load phase: token merging on and off, and the
    default with fewer connections, each asking more, if ``small_connections``."""
    n, chats, small = p.load_connections, p.load_chats_per_connection, p.small_connections
    tallies = [Tally("default", p.default_merge_ms, n, chats), Tally("no-merge", 0.0, n, chats)]
    if small:
        more = chats * max(1, n // small)
        tallies.append(Tally(f"default-{small}-connections", p.default_merge_ms, small, more))
    return tallies


async def measure(
    params: Params, sim: Process, tallies: Sequence[Tally], job: profiling.ProfileJob | None
) -> dict[str, Any]:
    """Part 1 against the default chatd; then the simulator's timing switched, every
    connection opened, a warm-up round, the idle CPU and the measured rounds of part 2,
    in turn, the order reversed every other round (ABC CBA) so drift in the machine's
    load falls on all; then, with ``job``, more rounds under py-spy (the default chatd)."""
    default = tallies[0].process
    ttft = await measure_ttft(
        default.listening["ws_url"], params.ttft_rounds, params.ttft_ms, params.ttft_tokens_per_s
    )
    control = sim.listening["url"].removesuffix("/v1")
    timing = {"ttft_ms": params.load_ttft_ms, "tokens_per_s": params.load_tokens_per_s}
    async with httpx.AsyncClient(base_url=control, timeout=10) as http:
        (await http.post("/_sim/timing", json=timing)).raise_for_status()
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            t.label: await open_connections(stack, t.process.listening["ws_url"], t.connections)
            for t in tallies
        }
        for tally in tallies:  # the upstream pool fills here, too
            await load_round(sockets[tally.label], -1, max(1, 100 // tally.connections))
        before = {t.label: t.process.cpu_seconds() for t in tallies}
        await trio.sleep(1.0)
        idle = {t.label: round(t.process.cpu_seconds() - before[t.label], 3) for t in tallies}
        for round_no in range(params.load_rounds):
            for tally in tallies if round_no % 2 == 0 else reversed(tallies):
                usage = Usage(tally.process, sim)
                usage.start()
                totals = await load_round(
                    sockets[tally.label], round_no, tally.chats_per_connection
                )
                tally.add(totals, usage.stop())
        profile = {"skipped": profiling.PY_SPY_MISSING} if params.profile else None
        if job is not None:
            chats = tallies[0].chats_per_connection

            async def rounds() -> None:
                for k in range(params.profile_rounds):
                    await load_round(sockets["default"], 1000 + k, chats)

            status = await profiling.record_profile(job, default.pid, rounds)
            profile = {"skipped": f"py-spy (status {status}) wrote nothing; see {job.log.name}"}
            if job.out.exists():
                profile = profiling.summarise_profile(job.out)
                job.log.unlink(missing_ok=True)
    load = {
        "idle_chatd_cpu_s_per_s": idle,
        "configs": [t.result(params.load_tokens_per_s, params.load_ttft_ms) for t in tallies],
        "profile": profile,
    }
    return {"ttft": ttft, "load": load}


# --- verdicts ---------------------------------------------------------------------------


def verdicts(ttft: Mapping[str, Any], load: Mapping[str, Any]) -> list[str]:
    """One line per target: met or not, with the numbers."""
    lines = []
    b = ttft["paths"][PATH_B[0]]["client"]["p50_ms"]
    for kind, ratio in ttft["ratios_b_over_a"].items():
        lines.append(
            f"TTFT tool_stream vs {kind} (B/A <= {TARGET_RATIO}): "
            f"**{'met' if ratio['met'] else 'not met'}**: p50 {b} ms / "
            f"{ttft['paths'][kind]['client']['p50_ms']} ms = {ratio['ratio_of_medians']} (the "
            f"simulator's own floor is {ratio['sim_floor_ratio']})"
        )
    configs = {c["label"]: c for c in load["configs"]}
    merged, unmerged = configs["default"], configs["no-merge"]
    per_token = merged["chatd_us_per_sim_token"]
    lines.append(
        f"Server CPU per streamed token, {merged['connections']} chats (design.md expects "
        f"~6-20 µs/token with merging): "
        f"**{'met' if per_token <= DESIGN_US_PER_TOKEN else 'not met'}**: {per_token} µs/token, "
        f"{merged['chatd_us_per_token_frame']} µs/token frame at "
        f"token_merge_ms={merged['token_merge_ms']:g} (chatd CPU {merged['chatd_cpu_busy']:.0%} "
        f"busy); {unmerged['chatd_us_per_sim_token']} µs/token at token_merge_ms=0 "
        f"({round(unmerged['chatd_us_per_sim_token'] / max(per_token, 1e-9), 2)}x)"
    )
    return lines


def main() -> None:
    parser = script_parser(__doc__, "a short run (well under a minute)", chatd_path=True)
    parser.add_argument("--ttft-rounds", type=int, help="requests per path (default 30; quick 8)")
    parser.add_argument(
        "--connections", type=int, default=100, help="concurrent chats in the load phase"
    )
    parser.add_argument(
        "--chats", type=int, help="chats per connection per load round (default 3; quick 1)"
    )
    parser.add_argument(
        "--small-connections",
        type=int,
        default=10,
        help="connections of the low-concurrency comparison (0 skips it)",
    )
    parser.add_argument(
        "--rounds", type=int, help="measured load rounds per configuration (default 4; quick 2)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile chatd under load with py-spy"
    )
    args = parser.parse_args()
    quick = bool(args.quick)
    params = Params(
        quick=quick,
        ttft_rounds=args.ttft_rounds or (8 if quick else 30),
        load_connections=args.connections,
        load_chats_per_connection=args.chats or (1 if quick else 3),
        small_connections=args.small_connections,
        load_rounds=args.rounds or (2 if quick else 4),
        profile=bool(args.profile),
        profile_rounds=1 if quick else 3,
    )
    chatd_path: Path = args.chatd_path.resolve()
    name = "pipeline" + ("-quick" if quick else "")
    RESULTS.mkdir(exist_ok=True)
    py_spy = profiling.find_py_spy() if params.profile else None
    job = None
    if py_spy is not None:
        out = RESULTS / f"{name}-profile.txt"
        out.unlink(missing_ok=True)
        job = profiling.ProfileJob(py_spy, out, out.with_suffix(".log"))
    record = RunRecord.start(__file__, chatd_path)
    tallies = load_tallies(params)
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        sim = start_sim(workdir, chatd_path, params.ttft_ms, params.ttft_tokens_per_s, stack)
        for t in tallies:
            env = {"CHATD_SERVER_TOKEN_MERGE_MS": f"{t.merge_ms:g}"}
            t.process = start_chatd(
                f"chatd-{t.label}", sim.listening["url"], workdir, chatd_path, stack, env
            )
        with log_tails_on_failure((sim, *(t.process for t in tallies))):
            measured = trio.run(measure, params, sim, tallies, job)
    result = record.result(
        "pipeline: TTFT by path, server CPU per streamed token", params, measured
    )
    result["verdicts"] = verdicts(result["ttft"], result["load"])
    write_results(RESULTS, name, result, markdown(result))


if __name__ == "__main__":
    main()
