"""Load chatd with virtual users and report whether it holds (issue 6, first slice).

``python benchmarks/load.py --scenario mix --users 100 --duration 20`` runs N virtual users
(one WebSocket each) through a scenario (``loadgen/scenarios.py``) against a fresh simulated
LLM and chatd, and writes benchmarks/results/load-<name>.{json,md}; ``--quick`` runs every
scenario, small, in under a minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.report import markdown
from loadgen.runner import Plan, run_scenario
from loadgen.scenarios import SCENARIOS
from loadgen.script import RunRecord, script_parser
from machine import write_results

# The plan's sizes: option, type, help, default, and default with --quick.
SIZES = (
    ("users", int, "virtual users", 100, 20),
    ("duration", float, "seconds of sending", 20.0, 3.5),
    ("ramp", float, "seconds to start all users", 5.0, 0.5),
    ("think", float, "mean think time between chats, s", 0.5, 0.2),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__, "every scenario, small (< 60 s)", chatd_path=True)
    scenario_help = "a scenario to run (repeat for several; default mix)"
    parser.add_argument(
        "--scenario", action="append", choices=[*SCENARIOS, "all"], help=scenario_help
    )
    for name, kind, text, default, quick in SIZES:
        parser.add_argument(f"--{name}", type=kind, help=f"{text} ({default:g}; quick {quick:g})")
    parser.add_argument("--max-requests", type=int, help="stop sending after this many")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="simulator ttft (300)")
    parser.add_argument("--tokens-per-s", type=float, default=40.0, help="simulator rate (40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", help="results file name: load-NAME.{json,md}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name, _kind, _text, default, quick in SIZES:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    return args


def plan_from(args: argparse.Namespace) -> tuple[list[str], Plan, str]:
    """Which scenarios, the plan, and the results name."""
    names = args.scenario or (["all"] if args.quick else ["mix"])
    if "all" in names:
        names = list(SCENARIOS)
    plan = Plan(
        users=args.users,
        duration_s=args.duration,
        ramp_s=min(args.ramp, args.duration / 2),
        think_s=args.think,
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
    scenarios = {"scenarios": [run_scenario(SCENARIOS[n], plan, chatd_path) for n in names]}
    benchmark = "load: virtual users against chatd and the simulated LLM"
    result = record.result(benchmark, plan, scenarios, params_key="plan")
    write_results(Path(__file__).parent / "results", f"load-{name}", result, markdown(result))


if __name__ == "__main__":
    main()
