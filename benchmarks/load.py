"""Load chatd with virtual users and report whether it holds (issue 6, first slice).

``python benchmarks/load.py --scenario mix --users 100 --duration 20`` starts a
simulated LLM and a chatd as subprocesses on loopback, runs N virtual users
(one WebSocket each, ramp-up, think time, bounded by duration and optionally
a request count) through the scenario, and writes
benchmarks/results/load-<name>.{json,md}. ``--quick`` runs every scenario,
small, in under a minute. Scenarios: see ``loadgen/scenarios.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.report import markdown
from loadgen.runner import Plan, run_scenario
from loadgen.scenarios import SCENARIOS
from loadgen.script import RunRecord
from machine import write_results

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
QUICK = {"users": 20, "duration": 3.5, "ramp": 0.5, "think": 0.2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "all"],
        help="a scenario to run (repeat for several; default mix)",
    )
    parser.add_argument("--quick", action="store_true", help="every scenario, small (< 60 s)")
    parser.add_argument("--users", type=int, help="virtual users (default 100; quick 20)")
    parser.add_argument("--duration", type=float, help="seconds of sending (20; quick 3.5)")
    parser.add_argument("--ramp", type=float, help="seconds to start all users (5; quick 0.5)")
    parser.add_argument("--think", type=float, help="mean think time between chats, s (0.5)")
    parser.add_argument("--max-requests", type=int, help="stop sending after this many")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="simulator ttft (300)")
    parser.add_argument("--tokens-per-s", type=float, default=40.0, help="simulator rate (40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", help="results file name: load-NAME.{json,md}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--chatd-path", type=Path, default=ROOT, help="chatd source tree to run")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> tuple[list[str], Plan, str]:
    """Which scenarios, the plan, and the results name."""
    names = args.scenario or (["all"] if args.quick else ["mix"])
    if "all" in names:
        names = list(SCENARIOS)
    defaults = QUICK if args.quick else {"users": 100, "duration": 20.0, "ramp": 5.0,
                                         "think": 0.5}  # fmt: skip
    duration = args.duration or defaults["duration"]
    plan = Plan(
        users=args.users or defaults["users"],
        duration_s=duration,
        ramp_s=min(defaults["ramp"] if args.ramp is None else args.ramp, duration / 2),
        think_s=defaults["think"] if args.think is None else args.think,
        max_requests=args.max_requests,
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    name = args.name or ("quick" if args.quick else f"{'-'.join(names)}-{plan.users}u")
    return names, plan, name


def main() -> None:
    args = parse_args()
    names, plan, name = plan_from(args)
    chatd_path: Path = args.chatd_path.resolve()
    record = RunRecord.start(__file__, chatd_path)
    scenarios = [run_scenario(SCENARIOS[n], plan, chatd_path) for n in names]
    result = record.result(
        "load: virtual users against chatd and the simulated LLM",
        plan,
        {"scenarios": scenarios},
        params_key="plan",
    )
    write_results(RESULTS, f"load-{name}", result, markdown(result))


if __name__ == "__main__":
    main()
