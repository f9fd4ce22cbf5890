"""chatd against the Go reference server: the comparison of record (issue 13).

Runs the team's side-by-side harness ``../shared/bench/vs-go`` (it builds go-ref with Debian's
golang-go on first use) for each load of :data:`LOADS`, about 25 minutes in all; writes every
figure with its chatd/Go ratio, target and verdict to ``benchmarks/results/vs-go.{json,md}``.

    python benchmarks/vs_go.py                 # every load, 2 alternating runs each
    python benchmarks/vs_go.py --only tools    # the loads whose name has "tools"
    python benchmarks/vs_go.py --render benchmarks/results/vs-go.json   # the report again
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

from loadgen.script import markdown_table
from machine import describe_machine, machine_markdown, write_results

ROOT = Path(__file__).resolve().parent.parent
CPU, TTFT, IDLE = "server CPU s / 1k tokens", "client TTFT p99 ms", "idle KiB / connection"
CHAT_CPU, ERRORS, DONE = "server CPU ms / chat", "errors", "chats done"
SLOW = "1000 2 5 direct 100"

Load = tuple[str, str, str, dict[str, float]]
LOADS: list[Load] = [  # (name, vs-go arguments, CHATD_ARGS, {figure: at most this chatd/Go})
    ("short chats", "200 5 40 direct 1", "", {CHAT_CPU: 2.5, ERRORS: 0}),
    ("Path A (tools)", "100 2 40 tools 100", "", {CHAT_CPU: 2.5}),
    ("200 streams at 40 tokens/s", "200 3 40 direct 100", "", {CPU: 2.0, TTFT: 1.15, IDLE: 1.2}),
    ("1,000 streams at 5 tokens/s", SLOW, "", {CPU: 2.5, TTFT: 1.3, ERRORS: 0, DONE: 1.0}),
    ("1,000 streams, 2 workers", SLOW, "--workers 2", {CPU: 2.5, TTFT: 1.15}),
]


def verdict(figure: str, row: dict[str, Any], bound: float) -> str:
    """``met`` or ``not met``: errors must be none, chats done all, ratios at most ``bound``."""
    if figure == ERRORS:
        return "met" if row.get("chatd") == 0 else "not met"
    if figure == DONE:
        return "met" if row.get("ratio") == 1.0 else "not met"
    ratio = row.get("ratio")
    return "met" if isinstance(ratio, int | float) and ratio <= bound else "not met"


def measure(harness: Path, runs: int, load: Load) -> dict[str, Any]:
    """One run of vs-go (``runs`` alternating runs) on ``load``: its JSON and the targets."""
    name, arguments, chatd_args, targets = load
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vs-go.json"
        env = dict(os.environ, VS_GO_JSON=str(out), VS_GO_RUNS=str(runs), CHATD_ARGS=chatd_args)
        env["VS_GO_IDLE"] = "1" if IDLE in targets else "0"
        subprocess.run([str(harness), *arguments.split()], cwd=ROOT, env=env, check=False)
        if not out.exists():
            raise SystemExit(f"vs-go {arguments} wrote no results")
        measured = json.loads(out.read_text())
    rows = []
    for figure, bound in targets.items():
        row = measured["figures"].get(figure, {})
        rows.append(
            {"figure": figure, **row, "target": bound, "verdict": verdict(figure, row, bound)}
        )
    return dict(name=name, load=arguments, chatd_args=chatd_args, rows=rows, all=measured)


def _number(value: Any, spec: str = ".4g", missing: str = "n/a") -> str:
    return f"{value:{spec}}" if isinstance(value, int | float) else missing


def _figures(row: dict[str, Any]) -> list[str]:
    """A figure's chatd/Go ratio, chatd's value and Go's, as the report shows them."""
    return [
        _number(row.get("ratio"), ".2f", "-"),
        _number(row.get("chatd")),
        _number(row.get("go")),
    ]


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a run: the targets first, then every figure."""
    targets = []
    for load in payload["loads"]:
        flags = f" `{load['chatd_args']}`" if load["chatd_args"] else ""
        for row in load["rows"]:
            goal = {ERRORS: "0", DONE: "all"}.get(row["figure"], f"≤ {row['target']}x")
            ratio, chatd, go = _figures(row)
            label = f"{load['name']}: `{load['load']}`{flags}"
            targets.append([label, row["figure"], ratio, goal, row["verdict"], chatd, go])
    header = ["load (vs-go USERS ROUNDS TOK/S KIND WORDS)", "figure", "chatd/Go", "target"]
    lines = [
        "# chatd against the Go reference (vs-go)",
        "",
        f"Commit {payload['commit']}; medians of {payload['runs']} alternating runs of "
        "`../shared/bench/vs-go` per load, chatd/Go ratios from the same runs. Every message "
        "is unique (no cache hit, no shared flight); both servers get limits above the load.",
        "",
        markdown_table([*header, "verdict", "chatd", "Go"], targets),
        "",
        "## Every figure",
        "",
    ]
    for load in payload["loads"]:
        flags = f" {load['chatd_args']}" if load["chatd_args"] else ""
        rows = [[figure, *_figures(row)] for figure, row in load["all"]["figures"].items()]
        lines += [f"### {load['name']} (`{load['load']}`{flags})", ""]
        lines += [markdown_table(["figure", "chatd/Go", "chatd", "Go"], rows), ""]
    lines += ["## Machine", "", machine_markdown(payload["machine"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared/bench/vs-go")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs per load")
    parser.add_argument("--only", help="run only the loads whose name contains this")
    earlier = "only write the report of an earlier run"
    parser.add_argument("--render", type=Path, metavar="JSON", help=earlier)
    args = parser.parse_args()
    if args.render:
        payload = json.loads(args.render.read_text())
    elif not args.harness.exists():
        sys.exit(f"no vs-go harness at {args.harness} (the team's shared/bench)")
    else:
        head = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
        commit = subprocess.run(head, capture_output=True, text=True).stdout.strip()
        machine = describe_machine()
        loads = [load for load in LOADS if not args.only or args.only in load[0]]
        results = [measure(args.harness, args.runs, load) for load in loads]
        payload = {"commit": commit, "runs": args.runs, "loads": results, "machine": machine}
    write_results(ROOT / "benchmarks" / "results", "vs-go", payload, render(payload))


if __name__ == "__main__":
    main()
