"""chatd against the Go reference server: the comparison of record (issue 13).

Runs the team's side-by-side harness (``../shared/bench/vs-go``: chatd and a
Go server built the way the original service was, one simulated LLM that
neither ships, one load generator, alternating runs) for each load below, and
writes every figure with its chatd/Go ratio, the target it has to meet and a
verdict, into ``benchmarks/results/vs-go.{json,md}``, with the commit and the
machine. Ratios from one run are the figures to quote: these machines are
shared, and absolute times move from run to run.

    python benchmarks/vs_go.py                 # every load, 2 alternating runs each
    python benchmarks/vs_go.py --only tools    # the loads whose name has "tools"
    python benchmarks/vs_go.py --harness PATH  # vs-go somewhere else
    python benchmarks/vs_go.py --render benchmarks/results/vs-go.json   # the report again

Needs the harness (it builds go-ref with Debian's golang-go on first use) and
about 25 minutes for every load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_markdown, write_results

ROOT = Path(__file__).resolve().parent.parent

# (name, vs-go arguments, CHATD_ARGS, [(figure, at most this chatd/Go ratio)])
LOADS: list[tuple[str, str, str, list[tuple[str, float]]]] = [
    ("short chats", "200 5 40 direct 1", "", [("server CPU ms / chat", 2.5), ("errors", 0)]),
    ("Path A (tools)", "100 2 40 tools 100", "", [("server CPU ms / chat", 2.5)]),
    (
        "200 streams at 40 tokens/s",
        "200 3 40 direct 100",
        "",
        [
            ("server CPU s / 1k tokens", 2.0),
            ("client TTFT p99 ms", 1.15),
            ("idle KiB / connection", 1.2),
        ],
    ),
    (
        "1,000 streams at 5 tokens/s",
        "1000 2 5 direct 100",
        "",
        [
            ("server CPU s / 1k tokens", 2.5),
            ("client TTFT p99 ms", 1.3),
            ("errors", 0),
            ("chats done", 1.0),
        ],
    ),
    (
        "1,000 streams, 2 workers",
        "1000 2 5 direct 100",
        "--workers 2",
        [("server CPU s / 1k tokens", 2.5), ("client TTFT p99 ms", 1.15)],
    ),
]


def verdict(figure: str, row: dict[str, Any], bound: float) -> str:
    """``met`` or ``not met``: errors must be none, chats done all, ratios at most ``bound``."""
    if figure == "errors":
        return "met" if row.get("chatd") == 0 else "not met"
    if figure == "chats done":
        return "met" if row.get("ratio") == 1.0 else "not met"
    ratio = row.get("ratio")
    return "met" if isinstance(ratio, int | float) and ratio <= bound else "not met"


def run_load(harness: Path, args: str, chatd_args: str, idle: bool, runs: int) -> dict[str, Any]:
    """One vs-go run's medians (its JSON)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vs-go.json"
        env = dict(
            os.environ,
            VS_GO_JSON=str(out),
            VS_GO_RUNS=str(runs),
            VS_GO_IDLE="1" if idle else "0",
            CHATD_ARGS=chatd_args,
        )
        subprocess.run([str(harness), *args.split()], cwd=ROOT, env=env, check=False)
        if not out.exists():
            raise SystemExit(f"vs-go {args} wrote no results")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "n/a"


def _ratio(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a run: the targets first, then every figure."""
    lines = [
        "# chatd against the Go reference (vs-go)",
        "",
        f"Commit {payload['commit']}; medians of {payload['runs']} alternating runs of "
        "`../shared/bench/vs-go` per load, chatd/Go ratios from the same runs. Every message "
        "is unique (no cache hit, no shared flight); both servers get limits above the load.",
        "",
        "| load (vs-go USERS ROUNDS TOK/S KIND WORDS) | figure | chatd/Go | target | verdict "
        "| chatd | Go |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in payload["loads"]:
        label = f"{result['name']}: `{result['load']}`" + (
            f" `{result['chatd_args']}`" if result["chatd_args"] else ""
        )
        for row in result["rows"]:
            figure = row["figure"]
            target = {"errors": "0", "chats done": "all"}.get(figure, f"≤ {row['target']}x")
            lines.append(
                f"| {label} | {figure} | {_ratio(row.get('ratio'))} | {target} | "
                f"{row['verdict']} | {_number(row.get('chatd'))} | {_number(row.get('go'))} |"
            )
    lines += ["", "## Every figure", ""]
    for result in payload["loads"]:
        flags = f" {result['chatd_args']}" if result["chatd_args"] else ""
        lines += [f"### {result['name']} (`{result['load']}`{flags})", ""]
        lines.append("| figure | chatd/Go | chatd | Go |\n|---|---|---|---|")
        for figure, row in result["all"]["figures"].items():
            lines.append(
                f"| {figure} | {_ratio(row.get('ratio'))} | {_number(row.get('chatd'))} | "
                f"{_number(row.get('go'))} |"
            )
        lines.append("")
    lines += ["## Machine", "", machine_markdown(payload["machine"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared/bench/vs-go")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs per load")
    parser.add_argument("--only", help="run only the loads whose name contains this")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only write the report of an earlier run"
    )
    args = parser.parse_args()
    results_dir = ROOT / "benchmarks" / "results"
    if args.render:
        payload = json.loads(args.render.read_text())
        write_results(results_dir, "vs-go", payload, render(payload))
        return
    if not args.harness.exists():
        sys.exit(f"no vs-go harness at {args.harness} (the team's shared/bench)")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    machine = describe_machine()
    loads = [load for load in LOADS if not args.only or args.only in load[0]]
    results = []
    for name, load, chatd_args, targets in loads:
        idle = any(figure == "idle KiB / connection" for figure, _ in targets)
        measured = run_load(args.harness, load, chatd_args, idle, args.runs)
        rows = []
        for figure, bound in targets:
            row = measured["figures"].get(figure, {})
            rows.append(
                {"figure": figure, **row, "target": bound, "verdict": verdict(figure, row, bound)}
            )
        results.append(
            {"name": name, "load": load, "chatd_args": chatd_args, "rows": rows, "all": measured}
        )
    payload = {"commit": commit, "runs": args.runs, "loads": results, "machine": machine}
    write_results(results_dir, "vs-go", payload, render(payload))


if __name__ == "__main__":
    main()
