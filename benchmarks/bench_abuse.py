"""Abuse (issue 15): a flood of long answers nobody reads, and one key flooding while another asks.

1. Slow readers: raw WebSockets send many chats whose answers are long, and never read again;
   chatd's RSS and what happens upstream (bar: RSS growth <= 50 MB, answers paused or cut).
2. Fairness: key A floods from a child process while key B asks one chat after another
   (bar: B's TTFT overhead loaded at most 2x unloaded, median and p90).

The report says how each figure is taken. Results go to benchmarks/results/abuse.{json,md};
``--quick`` (about 40 s) prints its report and writes files only with ``--output DIR``.
"""

from __future__ import annotations

import argparse
import functools
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.abuse_fairness import b_phase, flood_worker, ratio, read_line
from loadgen.abuse_rig import LLM_STREAMS_IN_USE, Rig, running_rig
from loadgen.abuse_slow_readers import long_answer_rules, mb, measure_slow_readers
from loadgen.processes import clean_env
from loadgen.script import RunRecord, script_parser
from machine import write_results
from reports.abuse import markdown

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
RSS_BAR_MB = 50.0
"""Issue 15: chatd's RSS may grow this much (10^6 bytes) under the slow-reader flood."""
TTFT_BAR_RATIO = 2.0
"""Issue 15: B's TTFT overhead under A's flood at most this times the unloaded one."""


@attrs.frozen(kw_only=True)
class Params:
    """What one run does."""

    quick: bool
    # 1. slow-reader flood
    answer_tokens: int = 20_000
    long_ttft_ms: float = 20.0
    long_tokens_per_s: float = 2000.0
    slow_sockets: int = 3
    chats_per_socket: int = 64
    window_s: float  # the figure: RSS growth and upstream outcomes over this long
    tail_s: float  # then watched this much longer, the sockets still open and unread
    word: str = "ok"  # each answer is this word answer_tokens times (a token: word and space)
    variant_word: str | None
    """A second flood with this longer word, whose answers pass the 64 Ki characters a
    request may have waiting (``_PENDING_CHARS``) but not ``limits.max_answer_chars``;
    ``None``: no second flood."""
    sample_s: float = 1.0
    # 2. fairness
    fair_ttft_ms: float = 300.0
    fair_tokens_per_s: float = 40.0
    llm_streams: int = 40
    max_queue: int = 100
    flood_sockets: int = 3
    flood_chats: int = 64  # chats key A keeps in flight on each of its connections
    refusal_pause_s: float = 0.1
    b_chats: int  # chats key B asks in each phase (unloaded, loaded, unloaded again)
    b_think_s: float = 0.25


def params_from(args: argparse.Namespace) -> Params:
    quick = bool(args.quick)
    return Params(
        quick=quick,
        window_s=args.window_s or (8.0 if quick else 30.0),
        tail_s=0.0 if quick else 15.0,
        variant_word=None if quick else "abc",
        b_chats=args.b_chats or (4 if quick else 20),
    )


# --- 1. slow-reader flood ---------------------------------------------------------------


def run_slow_readers(params: Params, workdir: Path, word: str, tail_s: float) -> dict[str, Any]:
    """One slow-reader flood, with answers of ``word`` repeated."""
    rules = workdir / f"slow-{word}.json"
    rules.write_bytes(orjson.dumps(long_answer_rules(params.answer_tokens, word)))
    timing = (params.long_ttft_ms, params.long_tokens_per_s)
    with running_rig(f"slow-{word}", timing, ["--rules", str(rules)]) as rig:
        result = trio.run(
            functools.partial(
                measure_slow_readers,
                rig,
                sockets=params.slow_sockets,
                chats_per_socket=params.chats_per_socket,
                window_s=params.window_s,
                sample_s=params.sample_s,
                tail_s=tail_s,
            )
        )
    return {**result, "word": word, "answer_chars": params.answer_tokens * (len(word) + 1) - 1}


# --- 2. fairness ------------------------------------------------------------------------


async def measure_fairness(rig: Rig, params: Params, key_a: str, key_b: str) -> dict[str, Any]:
    """Key B's chats unloaded, under key A's flood (a child process), and unloaded again."""
    headers = [(b"authorization", f"Bearer {key_b}".encode())]
    b_load = {"chats": params.b_chats, "think_s": params.b_think_s, "ttft_ms": params.fair_ttft_ms}
    flood_config = {
        "url": rig.ws_url,
        "key": key_a,
        "sockets": params.flood_sockets,
        "chats": params.flood_chats,
        "first": 10_000_000,
        "pause_s": params.refusal_pause_s,
    }
    # Saturated: A holds all it may (nine tenths of the slots: one client never takes the
    # last tenth), and someone is queued.
    share = params.llm_streams - params.llm_streams // 10
    phases = {}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        open_websocket_url(rig.ws_url, extra_headers=headers) as ws,
    ):
        for name in ("warm", "unloaded"):
            phases[name] = await b_phase(rig, ws, http, name, **b_load)
        worker = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--flood-worker", orjson.dumps(flood_config).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=clean_env(ROOT),
        )
        try:  # from here on, every way out ends the worker
            assert worker.stdin is not None and worker.stdout is not None
            buffer = bytearray()
            try:
                with trio.fail_after(30):
                    await read_line(worker.stdout, buffer)  # its connections are open
                    ramp0 = time.perf_counter()
                    while True:
                        metrics = await rig.metrics(http)
                        if (
                            metrics.get(LLM_STREAMS_IN_USE, 0) >= share
                            and metrics.get("chatd_queue_depth", 0) > 0
                        ):
                            break
                        await trio.sleep(0.1)
                    ramp_s = round(time.perf_counter() - ramp0, 2)
                    await trio.sleep(1.0)
                phases["loaded"] = await b_phase(rig, ws, http, "loaded", **b_load)
            finally:  # tell it to stop (its stdin closed), and read its summary
                await worker.stdin.aclose()
                with trio.fail_after(30):
                    flood = orjson.loads(await read_line(worker.stdout, buffer))
                    await worker.wait()
        finally:  # stuck, never told, or interrupted: it must not go on flooding
            if worker.returncode is None:
                worker.kill()
                with trio.move_on_after(5, shield=True):
                    await worker.wait()
        idle_after_s = await rig.until_idle(http, 30, upstream=False)
        if not params.quick:
            phases["unloaded-after"] = await b_phase(rig, ws, http, "unloaded-after", **b_load)

    del phases["warm"]
    unloaded, loaded = phases["unloaded"]["client_overhead"], phases["loaded"]["client_overhead"]
    flood["done_per_s"] = round(flood.get("done", 0) / max(1e-9, flood["elapsed_s"]), 1)
    return {
        "phases": phases,
        "flood": flood,
        "ramp_s": ramp_s,
        "idle_after_flood_s": idle_after_s,
        "ratio_p50": ratio(loaded["p50_ms"], unloaded["p50_ms"]),
        "ratio_p90": ratio(loaded["p90_ms"], unloaded["p90_ms"]),
        "chatd_log_warnings": dict(rig.server.log_events()),
    }


def run_fairness(params: Params) -> dict[str, Any]:
    key_a, key_b, operator = (secrets.token_urlsafe(24) for _ in range(3))
    env = {
        "CHATD_SERVER_API_KEYS": orjson.dumps([key_a, key_b]).decode(),
        "CHATD_SERVER_OPERATOR_KEYS": orjson.dumps([operator]).decode(),
        "CHATD_LIMITS_LLM_STREAMS": str(params.llm_streams),
        "CHATD_LIMITS_MAX_QUEUE": str(params.max_queue),
    }
    timing = (params.fair_ttft_ms, params.fair_tokens_per_s)
    with running_rig("fair", timing, chatd_env=env, operator_key=operator) as rig:
        return trio.run(measure_fairness, rig, params, key_a, key_b)


# --- verdicts ---------------------------------------------------------------------------


def unpaused_answer_s(params: Mapping[str, Any]) -> float:
    """How long one long answer takes upstream when it is read as fast as it comes."""
    return float(
        params["long_ttft_ms"] / 1000 + params["answer_tokens"] / params["long_tokens_per_s"]
    )


def slow_reader_verdict(slow: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[bool, str]:
    """Issue 15's first bar, met or not, with the numbers. An answer still open upstream
    counts as paused only once the window is twice as long as an unpaused answer takes:
    before that it may merely not have finished."""
    window = slow["window"]
    growth = mb(window["peak_rss_kib"] - slow["rss_baseline_kib"])
    sim = window["sim"]
    rss_ok = growth <= RSS_BAR_MB
    answer_s = unpaused_answer_s(params)
    conclusive = window["t_s"] >= 2 * answer_s
    streams_ok = sim["completed"] == 0 and (conclusive or not sim["active"])
    met = rss_ok and streams_ok
    still_open = f"{sim['active']} still open"
    if sim["active"] and conclusive:
        still_open += f" (paused: open more than twice the {answer_s:g} s an answer takes unpaused)"
    elif sim["active"]:
        still_open += (
            " (paused or still streaming: the window is too short to tell, under twice the "
            f"{answer_s:g} s an answer takes unpaused)"
        )
    return met, (
        f"Slow-reader flood (bar: RSS growth <= {RSS_BAR_MB:g} MB, upstream answers paused or "
        f"cut, not read to the end): **{'met' if met else 'not met'}**. Over "
        f"{window['t_s']:g} s chatd's RSS went {mb(slow['rss_baseline_kib'])} -> "
        f"{mb(window['peak_rss_kib'])} MB at its peak (growth **{growth} MB**, "
        f"{'within' if rss_ok else 'over'} the bar); of {sim['requests']} upstream answers "
        f"**{sim['completed']} were read to the end**, {still_open}, "
        f"{sim['client_disconnects']} cut."
    )


def fairness_verdict(fair: Mapping[str, Any]) -> tuple[bool, str]:
    """Issue 15's second bar, met or not, with the numbers."""
    unloaded, loaded = fair["phases"]["unloaded"], fair["phases"]["loaded"]
    u, lo = unloaded["client_overhead"], loaded["client_overhead"]
    r50, r90 = fair["ratio_p50"], fair["ratio_p90"]
    met = r50 is not None and r90 is not None and r50 <= TTFT_BAR_RATIO and r90 <= TTFT_BAR_RATIO
    return met, (
        f"Fairness under one key's flood (bar: B's TTFT overhead loaded <= {TTFT_BAR_RATIO:g}x "
        f"unloaded): **{'met' if met else 'not met'}**. Key B's overhead median / p90: "
        f"**{lo['p50_ms']} / {lo['p90_ms']} ms** under the flood against **{u['p50_ms']} / "
        f"{u['p90_ms']} ms** without it (**{r50}x / {r90}x**); of that, waiting for a slot "
        f"(chatd's `queue_ms`) {loaded['queue']['p50_ms']} / {loaded['queue']['p90_ms']} ms "
        f"loaded. B's chats: {loaded['done']} of {loaded['chats']} answered loaded, errors "
        f"{loaded['errors'] or 'none'}."
    )


# --- main -------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--flood-worker":
        summary = trio.run(flood_worker, orjson.loads(sys.argv[2]))
        print(orjson.dumps(summary).decode(), flush=True)
        return
    parser = script_parser(__doc__, "a short run (about 40 s)")
    parser.add_argument("--window-s", type=float, help="slow-reader window (default 30; quick 8)")
    parser.add_argument("--b-chats", type=int, help="key B's chats per phase (20; quick 4)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where abuse.{json,md} go (default benchmarks/results; "
        "with --quick, nowhere unless given)",
    )
    args = parser.parse_args()
    params = params_from(args)
    record = RunRecord.start(__file__, ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        slow = run_slow_readers(params, Path(tmp), params.word, params.tail_s)
        variant = None
        if params.variant_word is not None:
            variant = run_slow_readers(params, Path(tmp), params.variant_word, 0.0)
    fair = run_fairness(params)
    result = record.result(
        "abuse: slow-reader flood of long answers; fairness under one key's flood",
        params,
        {"slow_readers": slow, "slow_readers_variant": variant, "fairness": fair},
        loadavg_at_end=True,
    )
    verdicts = [slow_reader_verdict(slow, result["params"]), fairness_verdict(fair)]
    result["met"] = {"slow_readers": verdicts[0][0], "fairness": verdicts[1][0]}
    result["verdicts"] = [line for _met, line in verdicts]
    output = args.output or (None if params.quick else RESULTS)
    write_results(output, "abuse", result, markdown(result))


if __name__ == "__main__":
    main()
