"""FAQ retrieval: quality on the labelled set and the cost of a query, against an
earlier revision (issue 16).

For this tree and for ``--against`` (default 25869e4, the ranking before issue
16), each in a fresh process on its own code (a git worktree of the revision):

- quality: every case of ``chatd/data/faq_eval.jsonl`` searched as
  ``frequently_asked`` searches (the best of 3), judged at the revision's own
  default gate (``tools.faq_min_confidence``), by half: hit (the right entry,
  confident), wrong (another entry, confident), miss, and off-topic answered;
- cost: CPU (process time, every thread) and wall time of ``kb.search`` per
  query over every case's text, on the sample FAQ (76 entries) and on a
  generated FAQ of ``--entries`` entries (the sample's questions, tags and
  answers recombined, the same file for both revisions), medians of
  ``--passes`` passes after a warm-up; the revisions alternate ``--rounds``
  times and the medians of the rounds are reported.

    python benchmarks/bench_kb.py [--against REV] [--entries 10000]

Writes benchmarks/results/kb.{json,md}. Waits while /tmp/bench.lock exists.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_markdown, write_results

ROOT = Path(__file__).resolve().parent.parent
EVAL_SET = ROOT / "chatd" / "data" / "faq_eval.jsonl"
OUTCOMES = ("hit", "wrong", "miss", "answered")


def generated_faq(count: int, seed: int = 16) -> list[dict[str, Any]]:
    """``count`` entries: the sample's own, then questions stitched from halves
    of two real questions, with a real entry's tags and answer."""
    from chatd.stores.kb import sample_faq

    real = sample_faq()
    rng = random.Random(seed)
    rows = [{"question": e.question, "answer": e.answer, "tags": list(e.tags)} for e in real]
    while len(rows) < count:
        a, b = rng.sample(real, 2)
        head, tail = a.question.split(), b.question.split()
        question = " ".join(head[: len(head) // 2 + 1] + tail[len(tail) // 2 :])
        rows.append({"question": question, "answer": b.answer, "tags": list(a.tags)})
    return rows


# --- the child: one revision's code, in its own process --------------------------------


async def measure(faq_file: str, passes: int) -> dict[str, Any]:
    """Quality on the sample FAQ, then the cost of a query on it and on ``faq_file``."""
    from chatd.config.settings import KBSettings, ToolsSettings
    from chatd.stores.kb import load_faq_file, open_knowledge_base

    cases = [json.loads(line) for line in EVAL_SET.read_text().splitlines() if line.strip()]
    gate = ToolsSettings().faq_min_confidence
    result: dict[str, Any] = {"gate": gate}
    with tempfile.TemporaryDirectory() as tmp:
        async with open_knowledge_base(KBSettings(path=f"{tmp}/sample.sqlite3")) as kb:
            result["quality"] = await judge(kb, cases, gate)
            result["cost_sample"] = await cost(kb, cases, passes)
        big = KBSettings(path=f"{tmp}/big.sqlite3")
        async with open_knowledge_base(big, seed=False) as kb:
            entries = load_faq_file(faq_file)
            await kb.add(entries)
            result["cost_generated"] = await cost(kb, cases, passes)
            result["generated_entries"] = len(entries)
    return result


async def judge(kb: Any, cases: list[dict[str, Any]], gate: float) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for case in cases:
        passages = await kb.search(case["text"], limit=3)
        best = passages[0] if passages else None
        confident = best is not None and best.confidence >= gate
        half = counts.setdefault(case["split"], dict.fromkeys((*OUTCOMES, "phrasings", "off"), 0))
        if case["question"] is None:
            half["off"] += 1
            half["answered"] += confident
        else:
            half["phrasings"] += 1
            right = best is not None and best.question == case["question"]
            half["hit" if confident and right else "wrong" if confident else "miss"] += 1
    return counts


async def cost(kb: Any, cases: list[dict[str, Any]], passes: int) -> dict[str, float]:
    texts = [case["text"] for case in cases]
    for text in texts[:50]:
        await kb.search(text, limit=3)
    cpu_medians, wall_medians = [], []
    for _ in range(passes):
        cpu, wall = [], []
        for text in texts:
            c0, w0 = time.process_time(), time.perf_counter()
            await kb.search(text, limit=3)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        cpu_medians.append(statistics.median(cpu))
        wall_medians.append(statistics.median(wall))
    return {
        "cpu_us": statistics.median(cpu_medians) * 1e6,
        "wall_us": statistics.median(wall_medians) * 1e6,
    }


def child(tree: str, faq_file: str, passes: int) -> None:
    import trio

    import chatd

    where = Path(chatd.__file__).resolve()
    if not where.is_relative_to(Path(tree).resolve()):
        sys.exit(f"chatd imported from {where}, not from {tree}")
    print(json.dumps(trio.run(measure, faq_file, passes)))


# --- the parent -----------------------------------------------------------------------------


def run_tree(tree: Path, faq_file: str, passes: int) -> dict[str, Any]:
    while Path("/tmp/bench.lock").exists():
        time.sleep(5)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--child", str(tree), faq_file, "--passes", str(passes)]
    out = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def rate(half: dict[str, int], outcome: str) -> float:
    whole = half["off"] if outcome == "answered" else half["phrasings"]
    return 100 * half[outcome] / whole if whole else 0.0


def render(result: dict[str, Any]) -> str:
    names = list(result["revisions"])
    lines = [
        "# FAQ retrieval: quality and the cost of a query",
        "",
        f"This tree ({result['commit']}) against {result['against']}, each in its own process on "
        f"its own code, alternating {result['rounds']} times; costs are the medians of the rounds "
        f"(each a median over {result['passes']} passes of every case's text). Quality is judged "
        "at each revision's own default gate (`tools.faq_min_confidence`): hit, wrong entry and "
        "miss are % of phrasings, off-topic answered % of off-topic cases. Thresholds were "
        "chosen on the tune half; the test half is held out.",
        "",
        "| revision | gate | half | phrasings | hit | wrong | miss | off-topic | answered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rev = result["revisions"][name]
        for split, half in sorted(rev["quality"].items()):
            figures = " | ".join(f"{rate(half, o):.1f}" for o in OUTCOMES[:3])
            lines.append(
                f"| {name} | {rev['gate']} | {split} | {half['phrasings']} | {figures} | "
                f"{half['off']} | {rate(half, 'answered'):.1f} |"
            )
    lines += [
        "",
        "Issue 16's bar on the test half: hit >= 85%, wrong <= 2%, off-topic answered <= 5%.",
        "",
        "| FAQ | "
        + " | ".join(f"{n} CPU us / query" for n in names)
        + " | ratio | "
        + " | ".join(f"{n} wall us" for n in names)
        + " |",
        "|---|" + "---|" * (2 * len(names) + 1),
    ]
    for key, label in (("cost_sample", "sample, 76 entries"), ("cost_generated", "generated")):
        cpu = [result["revisions"][n][key]["cpu_us"] for n in names]
        wall = [result["revisions"][n][key]["wall_us"] for n in names]
        if key == "cost_generated":
            label = f"generated, {result['revisions'][names[-1]]['generated_entries']:,} entries"
        lines.append(
            f"| {label} | "
            + " | ".join(f"{c:.0f}" for c in cpu)
            + f" | {cpu[-1] / cpu[0]:.2f}x | "
            + " | ".join(f"{w:.0f}" for w in wall)
            + " |"
        )
    lines += ["", "Ratio: this tree's CPU over the earlier revision's.", "", "## Machine", ""]
    lines += [
        machine_markdown(result["machine"]),
        "",
        "Reproduce: `python benchmarks/bench_kb.py`",
        "",
    ]
    return "\n".join(lines)


def median_costs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(runs[0])
    for key in ("cost_sample", "cost_generated"):
        merged[key] = {
            figure: statistics.median(run[key][figure] for run in runs) for figure in runs[0][key]
        }
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", default="25869e4")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("TREE", "FAQ_FILE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.passes)
        return
    machine = describe_machine()
    head = git("rev-parse", "--short", "HEAD").strip()
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--", "chatd").strip() else ""
    with tempfile.TemporaryDirectory() as tmp:
        faq_file = f"{tmp}/generated.jsonl"
        with open(faq_file, "w", encoding="utf-8") as f:
            for row in generated_faq(args.entries):
                f.write(json.dumps(row) + "\n")
        old = Path(tmp) / "against"
        git("worktree", "add", "--detach", str(old), args.against)
        try:
            trees = {args.against: old, "this tree": ROOT}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    runs[name].append(run_tree(tree, faq_file, args.passes))
        finally:
            git("worktree", "remove", "--force", str(old))
    result = {
        "commit": head + dirty,
        "against": args.against,
        "rounds": args.rounds,
        "passes": args.passes,
        "machine": machine,
        "revisions": {name: median_costs(r) for name, r in runs.items()},
    }
    write_results(ROOT / "benchmarks" / "results", "kb", result, render(result))


if __name__ == "__main__":
    main()
