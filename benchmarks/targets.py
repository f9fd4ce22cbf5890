"""Will it hold? Every target of issue 6, measured in one run, with a verdict each.

``python benchmarks/targets.py --full`` runs the issue's numbers (about 12
minutes on the 2-core machine; run it when the machine is quiet);
``--quick`` runs the same measurements scaled down in under two minutes
(``nox -s bench``). Sections, each with fresh processes (a simulator and a
chatd, or the bare relay of ``relay.py``):

- ``paths``: Path B against Path A time to first token (``bench_pipeline``);
- ``storm``: N identical questions at once, flights and cache on, then off
  (``bench_resilience``);
- ``streams``: 1,000 concurrent chat streams, 300 ms ttft, 5 tokens/s: errors
  and chatd's TTFT overhead (``loadgen``);
- ``floor``: 200 streams of 40 tokens/s against chatd and the bare relay:
  CPU per token, their ratio, and the capacity it implies (``loadgen.floor``);
- ``cancels``: random cancels, each timed to chatd closing the upstream
  connection (``loadgen.cancels`` and ``closewatch.py``);
- ``idle``: RSS per idle WebSocket, chatd and the relay (``loadgen.idle``);
- ``logging``: chatd CPU per request with request logs on and off
  (``bench_observability``);
- ``soak``: chatd's RSS after 5,000 requests and after 50,000 (``loadgen.soak``).

Results: benchmarks/results/targets{,-quick}.{json,md} and the plots
targets-{ttft,throughput,rss}{,-quick}.png. ``--only SECTION`` runs some
sections and writes targets-SECTION…{,-quick}.* instead. A section that fails
is reported as such (its targets *not measured*) and the rest still run.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.cancels import cancel_to_close
from loadgen.comparisons import logging_on_off, path_ttft, storm_on_off
from loadgen.floor import floor_and_capacity
from loadgen.idle import measure_idle
from loadgen.plots import draw_plots
from loadgen.rig import Rig, rig_running
from loadgen.runner import Plan, run_scenario
from loadgen.scenarios import SCENARIOS, Behaviour, Scenario
from loadgen.script import provenance
from loadgen.soak import measure_soak
from loadgen.targets_report import markdown
from loadgen.users import Record
from loadgen.verdicts import target_rows
from machine import describe_machine, write_results

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent

CANCELS = Scenario(
    "cancel-close",
    "chit-chat, every request cancelled 0.05-1 s after it was sent",
    {"chitchat": 1},
    Behaviour(cancel_p=1.0),
)


@attrs.frozen
class Sizes:
    """How big each section is."""

    streams: int
    streams_duration_s: float
    streams_ramp_s: float
    floor_users: int
    floor_duration_s: float
    floor_rounds: int
    idle_connections: int
    soak_checkpoints: tuple[int, ...]
    soak_users: int
    cancels: int
    cancel_users: int
    storm_n: int
    ttft_rounds: int
    log_connections: int
    log_chats: int
    log_rounds: int


FULL = Sizes(
    streams=1000, streams_duration_s=30, streams_ramp_s=10,
    floor_users=200, floor_duration_s=20, floor_rounds=2,
    idle_connections=2000,
    soak_checkpoints=(5_000, 50_000), soak_users=50,
    cancels=1000, cancel_users=50,
    storm_n=1000,
    ttft_rounds=30,
    log_connections=50, log_chats=6, log_rounds=6,
)  # fmt: skip
QUICK = Sizes(
    streams=200, streams_duration_s=3, streams_ramp_s=1,
    floor_users=200, floor_duration_s=4, floor_rounds=1,
    idle_connections=500,
    soak_checkpoints=(200, 2_000), soak_users=50,
    cancels=100, cancel_users=20,
    storm_n=200,
    ttft_rounds=8,
    log_connections=30, log_chats=3, log_rounds=2,
)  # fmt: skip
# The soak's simulator: fast, so that tens of thousands of requests take minutes.
SOAK_TTFT_MS, SOAK_TOKENS_PER_S = 5.0, 2000.0
STREAMS_TTFT_MS, STREAMS_TOKENS_PER_S = 300.0, 5.0


def _ttft_samples(_rig: Rig, records: Sequence[Record]) -> dict[str, Any]:
    return {"ttft_samples_ms": [round(r.ttft_s * 1000, 1) for r in records if r.ttft_s]}


def streams(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    plan = Plan(users=sizes.streams, duration_s=sizes.streams_duration_s,
                ramp_s=sizes.streams_ramp_s, think_s=0.0, ttft_ms=STREAMS_TTFT_MS,
                tokens_per_s=STREAMS_TOKENS_PER_S, progress=progress)  # fmt: skip
    result = run_scenario(SCENARIOS["chitchat"], plan, chatd_path, finish=_ttft_samples)
    return {"users": plan.users, "ttft_ms": plan.ttft_ms, "tokens_per_s_each": plan.tokens_per_s,
            **result}  # fmt: skip


def floor(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    return floor_and_capacity(chatd_path, sizes.floor_users, sizes.floor_duration_s,
                              ramp_s=2.0, rounds=sizes.floor_rounds, progress=progress)  # fmt: skip


def cancels(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    plan = Plan(users=sizes.cancel_users, duration_s=600.0, ramp_s=1.0, think_s=0.1,
                max_requests=sizes.cancels, progress=progress)  # fmt: skip
    result = run_scenario(CANCELS, plan, chatd_path, watch_closes=True, finish=cancel_to_close)
    del result["samples"]
    return {"users": plan.users, **result}


def idle(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for server in ("chatd", "relay"):
        # Idle connections do not care how fast the LLM is: the warm-up may be quick.
        with rig_running(f"idle-{server}", chatd_path, SOAK_TTFT_MS, SOAK_TOKENS_PER_S,
                         server=server) as rig:  # fmt: skip
            n = sizes.idle_connections
            result[server] = trio.run(measure_idle, rig, n, max(1, n // 10))
    return result


def soak(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    with rig_running("soak", chatd_path, SOAK_TTFT_MS, SOAK_TOKENS_PER_S) as rig:
        result = trio.run(
            measure_soak, rig, SCENARIOS["mix"], sizes.soak_users, sizes.soak_checkpoints,
            SOAK_TTFT_MS, SOAK_TOKENS_PER_S, progress,
        )  # fmt: skip
    return {"ttft_ms": SOAK_TTFT_MS, "tokens_per_s": SOAK_TOKENS_PER_S, **result}


def storm(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    return storm_on_off(chatd_path, sizes.storm_n, connections=10)


def paths(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    return path_ttft(chatd_path, sizes.ttft_rounds)


def logging(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    return logging_on_off(chatd_path, sizes.log_connections, sizes.log_chats, sizes.log_rounds)


SECTIONS: dict[str, Callable[[Sizes, Path, bool], dict[str, Any]]] = {
    "paths": paths,
    "storm": storm,
    "streams": streams,
    "floor": floor,
    "cancels": cancels,
    "idle": idle,
    "logging": logging,
    "soak": soak,
}


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the rig's processes
    inherit it (2,000 idle connections are 2,000 descriptors on each side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--full", action="store_true", help="the issue's numbers (~12 min)")
    size.add_argument("--quick", action="store_true", help="scaled down (< 2 min)")
    parser.add_argument("--only", action="append", choices=list(SECTIONS),
                        help="run this section only (repeat for several)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--chatd-path", type=Path, default=ROOT, help="chatd source tree to run")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    sizes = QUICK if args.quick else FULL
    chatd_path: Path = args.chatd_path.resolve()
    progress = not args.quiet and sys.stderr.isatty()
    names = [n for n in SECTIONS if not args.only or n in args.only]
    machine = describe_machine()
    machine["open_files_limit"] = raise_fd_limit()
    started = time.perf_counter()
    sections: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in names:
        print(f"targets: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            sections[name] = SECTIONS[name](sizes, chatd_path, progress)
        except Exception as exc:  # one broken section must not hide the others' figures
            traceback.print_exc()
            sections[name] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
        seconds[name] = round(time.perf_counter() - t0, 1)
    suffix = "-quick" if args.quick else ""
    name = "targets" + ("-" + "-".join(names) if args.only else "")
    result: dict[str, Any] = {
        "benchmark": "targets: every target of issue 6 with its verdict",
        "command": " ".join(["python benchmarks/targets.py", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "sizes": attrs.asdict(sizes),
        "chatd": provenance(chatd_path),
        "targets": target_rows(sections),
        "sections": sections,
        "section_seconds": seconds,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": machine,
    }
    RESULTS.mkdir(exist_ok=True)
    result["plots"] = draw_plots(sections, RESULTS, name, suffix)
    write_results(RESULTS, name + suffix, result, markdown(result))


if __name__ == "__main__":
    main()
