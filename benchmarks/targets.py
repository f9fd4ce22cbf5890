"""Will it hold? Every target of issue 6, measured in one run, with a verdict each.

``python benchmarks/targets.py --full`` runs the issue's numbers (about 12 minutes on the
2-core machine; run it when the machine is quiet); ``--quick`` the same measurements scaled
down, in under two minutes (``nox -s bench``). Each section (see :data:`SECTIONS`) starts
fresh processes; one that fails is reported as such (its targets *not measured*) and the rest
still run. Results: benchmarks/results/targets{,-quick}.{json,md} and the plots
targets-{ttft,throughput,rss}{,-quick}.png; ``--only SECTION`` writes targets-SECTION….
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

sys.path.insert(0, str(Path(__file__).parent))
from comparisons import logging_on_off, path_ttft, storm_on_off
from loadgen.cancels import cancel_to_close
from loadgen.floor import floor_and_capacity
from loadgen.idle import measure_idle
from loadgen.plots import draw_plots
from loadgen.rig import Rig, rig_running
from loadgen.runner import Plan, run_scenario
from loadgen.scenarios import SCENARIOS, Behaviour, Scenario
from loadgen.script import ROOT, RunRecord
from loadgen.soak import measure_soak
from loadgen.targets_report import markdown
from loadgen.users import Record
from loadgen.verdicts import target_rows
from machine import write_results

RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")
R = TypeVar("R")
CANCELS = Scenario(
    "cancel-close",
    "chit-chat, every request cancelled 0.05-1 s after it was sent",
    {"chitchat": 1},
    Behaviour(cancel_p=1.0),
)
# The soak's simulator: fast, so that tens of thousands of requests take minutes.
SOAK_TTFT_MS, SOAK_TOKENS_PER_S = 5.0, 2000.0


def size(full: T, quick: T) -> T:
    """A size of ``full`` in the issue's run (the default) and ``quick`` in ``--quick``'s; a
    plain default is the same in both."""
    return attrs.field(default=full, metadata={"quick": quick})


def _ttft_samples(_rig: Rig, records: Sequence[Record]) -> dict[str, Any]:
    return {"ttft_samples_ms": [round(r.ttft_s * 1000, 1) for r in records if r.ttft_s]}


@attrs.frozen
class Streams:
    """``users`` streams sending for ``duration_s``, ramped up over the first ``ramp_s``."""

    users: int = size(1000, quick=200)
    duration_s: float = size(30, quick=3)
    ramp_s: float = size(10, quick=1)


def streams(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    """1,000 concurrent chat streams at 300 ms ttft, 5 tokens/s: errors and TTFT overhead."""
    plan = Plan(users=sizes.streams.users, duration_s=sizes.streams.duration_s,
                ramp_s=sizes.streams.ramp_s, think_s=0.0, ttft_ms=300.0, tokens_per_s=5.0,
                progress=progress)  # fmt: skip
    result = run_scenario(SCENARIOS["chitchat"], plan, chatd_path, finish=_ttft_samples)
    return {"users": plan.users, "ttft_ms": plan.ttft_ms, "tokens_per_s_each": plan.tokens_per_s,
            **result}  # fmt: skip


@attrs.frozen
class Floor:
    """``users`` streams for ``duration_s`` against each server in turn, ``rounds`` times."""

    users: int = 200
    duration_s: float = size(20, quick=4)
    rounds: int = size(2, quick=1)


def floor(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    """200 streams of 40 tokens/s against chatd and the bare relay: CPU per token, capacity."""
    plan = Plan(users=sizes.floor.users, duration_s=sizes.floor.duration_s, ramp_s=2.0,
                think_s=0.0, progress=progress)  # fmt: skip
    return floor_and_capacity(chatd_path, plan, sizes.floor.rounds)


@attrs.frozen
class Cancels:
    """``requests`` cancelled requests in all, from ``users`` users at once."""

    requests: int = size(1000, quick=100)
    users: int = size(50, quick=20)


def cancels(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    """Random cancels, each timed to chatd closing the upstream connection."""
    plan = Plan(users=sizes.cancels.users, duration_s=600.0, ramp_s=1.0, think_s=0.1,
                max_requests=sizes.cancels.requests, progress=progress)  # fmt: skip
    result = run_scenario(CANCELS, plan, chatd_path, watch_closes=True, finish=cancel_to_close)
    del result["samples"]
    return {"users": plan.users, **result}


def idle(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    """RSS per idle WebSocket, chatd and the relay (a fast simulator: only the warm-up asks)."""
    result: dict[str, Any] = {}
    n = sizes.idle_connections
    for server in ("chatd", "relay"):
        with rig_running(f"idle-{server}", chatd_path, SOAK_TTFT_MS, SOAK_TOKENS_PER_S,
                         server=server) as rig:  # fmt: skip
            result[server] = trio.run(measure_idle, rig, n, max(1, n // 10))
    return result


@attrs.frozen
class Soak:
    """``users`` asking back to back; chatd's RSS read at each of ``checkpoints`` requests."""

    checkpoints: tuple[int, ...] = size((5_000, 50_000), quick=(200, 2_000))
    users: int = 50


def soak(sizes: Sizes, chatd_path: Path, progress: bool) -> dict[str, Any]:
    """chatd's RSS after each of the checkpoints' request counts."""
    with rig_running("soak", chatd_path, SOAK_TTFT_MS, SOAK_TOKENS_PER_S) as rig:
        result = trio.run(
            measure_soak, rig, SCENARIOS["mix"], sizes.soak.users, sizes.soak.checkpoints,
            SOAK_TTFT_MS, SOAK_TOKENS_PER_S, progress,
        )  # fmt: skip
    return {"ttft_ms": SOAK_TTFT_MS, "tokens_per_s": SOAK_TOKENS_PER_S, **result}


@attrs.frozen
class Logging:
    """``connections`` × ``chats`` questions a round, ``rounds`` rounds per configuration."""

    connections: int = size(50, quick=30)
    chats: int = size(6, quick=3)
    rounds: int = size(6, quick=2)


@attrs.frozen
class Sizes:
    """How big each section is, in the order of :data:`SECTIONS` (see :func:`size`)."""

    ttft_rounds: int = size(30, quick=8)
    storm_n: int = size(1000, quick=200)
    streams: Streams = Streams()
    floor: Floor = Floor()
    cancels: Cancels = Cancels()
    idle_connections: int = size(2000, quick=500)
    logging: Logging = Logging()
    soak: Soak = Soak()


def scaled_down(record: R) -> R:
    """``record`` with each :func:`size` at its quick value, in nested records too."""
    quick = {}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        quick[field.name] = (
            scaled_down(value) if attrs.has(type(value)) else field.metadata.get("quick", value)
        )
    return attrs.evolve(record, **quick)


FULL = Sizes()
QUICK = scaled_down(FULL)


# Every section in the order they run; each takes (sizes, chatd_path, progress).
SECTIONS: dict[str, Callable[[Sizes, Path, bool], dict[str, Any]]] = {
    "paths": lambda sizes, chatd_path, _: path_ttft(chatd_path, sizes.ttft_rounds),
    "storm": lambda sizes, chatd_path, _: storm_on_off(chatd_path, sizes.storm_n, connections=10),
    "streams": streams,
    "floor": floor,
    "cancels": cancels,
    "idle": idle,
    "logging": lambda sizes, chatd_path, _: logging_on_off(
        chatd_path, sizes.logging.connections, sizes.logging.chats, sizes.logging.rounds
    ),
    "soak": soak,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="the issue's numbers (~12 min)")
    mode.add_argument("--quick", action="store_true", help="scaled down (< 2 min)")
    parser.add_argument("--only", action="append", choices=list(SECTIONS),
                        help="run this section only (repeat for several)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--chatd-path", type=Path, default=ROOT, help="chatd source tree to run")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    sizes, chatd_path = QUICK if args.quick else FULL, args.chatd_path.resolve()
    progress = not args.quiet and sys.stderr.isatty()
    record = RunRecord.start(__file__, chatd_path)
    # Raise the open-file limit to the hard limit; the rig's processes inherit it (2,000 idle
    # connections are 2,000 descriptors on each side).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    record.machine["open_files_limit"] = hard
    sections: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in [n for n in SECTIONS if not args.only or n in args.only]:
        print(f"targets: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            sections[name] = SECTIONS[name](sizes, chatd_path, progress)
        except Exception as exc:  # one broken section must not hide the others' figures
            traceback.print_exc()
            sections[name] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
        seconds[name] = round(time.perf_counter() - t0, 1)
    measured = {
        "mode": "quick" if args.quick else "full",
        "targets": target_rows(sections),
        "sections": sections,
        "section_seconds": seconds,
    }
    benchmark = "targets: every target of issue 6 with its verdict"
    result = record.result(benchmark, sizes, measured, params_key="sizes")
    name = "-".join(["targets", *(sections if args.only else [])])
    suffix = "-quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    result["plots"] = draw_plots(sections, RESULTS, name, suffix)
    write_results(RESULTS, name + suffix, result, markdown(result))


if __name__ == "__main__":
    main()
