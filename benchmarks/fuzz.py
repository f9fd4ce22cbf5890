"""The protocol fuzzer of tests/e2e/test_fuzz.py (imported from it), run long: 100,000
examples or the time budget. Unlike CI, a failing run of 200 is recorded (its minimal example
and seed) and the fuzz goes on; resident memory after every run shows a leak as a slope.

    python benchmarks/fuzz.py [--examples N] [--budget-min 30] [--seed N] [--quick]

Writes benchmarks/results/fuzz{,-quick}.{json,md}. ``--seed`` (or ``CHATD_FUZZ_SEED``) picks
the seed; the default differs from CI's, so the long run covers other ground.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from machine import describe_machine, machine_markdown, write_results

from chatd.testing import open_chatd
from tests.e2e.test_fuzz import (
    CHUNK,
    DEFAULT_SEED,
    MEMORY_TOLERANCE,
    STEPS,
    FuzzResult,
    Harness,
    fuzz,
    fuzz_settings,
    settled_rss,
    warnings_only,
)

RESULTS = Path(__file__).parent / "results"
LONG_RUN_SEED = DEFAULT_SEED + 1_000_000


def describe_failure(exc: BaseException) -> str:
    """A failure as hypothesis reported it: the error, its notes (the
    minimal example's steps and the seed), without the traceback's frames."""
    lines = traceback.format_exception_only(type(exc), exc)
    for sub in getattr(exc, "exceptions", ()):
        lines.append(describe_failure(sub))
    return "".join(lines).strip()


async def run(examples: int, budget_s: float, run_seed: int) -> dict[str, Any]:
    chunks: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    last = {"at": time.perf_counter(), "sequences": 0}

    def on_chunk(index: int, failure: Exception | None, harness: Harness) -> None:
        now = time.perf_counter()
        done = harness.counts["examples"]
        chunk = {
            "chunk": index,
            "seed": run_seed + index,
            "sequences": done - last["sequences"],
            "seconds": round(now - last["at"], 2),
            "rss_mib": round(settled_rss() / 2**20, 1),
            "failed": failure is not None,
        }
        chunks.append(chunk)
        if failure is not None:
            failures.append({**chunk, "report": describe_failure(failure)})
            print(f"chunk {index} FAILED:\n{failures[-1]['report']}", flush=True)
        if index % 25 == 0 or failure is not None:
            print(f"chunk {index}: {done} sequences, {chunk}", flush=True)
        last.update(at=now, sequences=done)

    started = time.perf_counter()
    result: FuzzResult | None = None
    final_failure: str | None = None
    with warnings_only(), tempfile.TemporaryDirectory() as tmp:
        try:
            async with open_chatd(fuzz_settings(Path(tmp) / "kb.sqlite3")) as chatd:
                result = await fuzz(
                    chatd,
                    examples=examples,
                    run_seed=run_seed,
                    budget_s=budget_s,
                    on_chunk=on_chunk,
                )
        except Exception as exc:  # the end-of-run checks (registry, streams, bystander)
            final_failure = describe_failure(exc)
    return {
        "result": result,
        "chunks": chunks,
        "failures": failures,
        "final_failure": final_failure,
        "wall_s": time.perf_counter() - started,
    }


def slope_per_10k(chunks: list[dict[str, Any]]) -> float | None:
    """RSS growth in MiB per 10,000 sequences over the second half of the run
    (least squares), after the bounded structures filled in the first."""
    half = len(chunks) // 2
    if len(chunks) - half < 3:
        return None
    sequences = list(itertools.accumulate(chunk["sequences"] for chunk in chunks))
    rss = [chunk["rss_mib"] for chunk in chunks]
    return statistics.linear_regression(sequences[half:], rss[half:]).slope * 10_000


def report(
    outcome: dict[str, Any],
    examples: int,
    budget_s: float,
    run_seed: int,
    quick: bool,
    machine: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    result: FuzzResult | None = outcome["result"]
    chunks, failures = outcome["chunks"], outcome["failures"]
    sequences = sum(chunk["sequences"] for chunk in chunks)
    seconds = result.seconds if result else outcome["wall_s"]
    valid = result.examples if result else None
    slope = slope_per_10k(chunks)
    rss = [chunk["rss_mib"] for chunk in chunks]
    data = {
        "examples_asked": examples,
        "budget_s": budget_s,
        "seed": run_seed,
        "chunk": CHUNK,
        "steps_per_example": STEPS,
        "hypothesis_valid_examples": valid,
        "sequences_run": sequences,
        "seconds": round(seconds, 1),
        "sequences_per_s": round(sequences / seconds, 1) if seconds else None,
        "failures": failures,
        "final_checks_failure": outcome["final_failure"],
        "bystander_answers": result.bystander_answers if result else None,
        "rss_mib_per_chunk": rss,
        "rss_end_mib": round(result.rss_end / 2**20, 1) if result else None,
        "rss_slope_mib_per_10k_sequences": round(slope, 2) if slope is not None else None,
        "counts": result.counts if result else None,
        "step_seconds": {k: round(v, 1) for k, v in result.step_seconds.items()}
        if result
        else None,
        "machine": machine,
    }
    stopped = (
        "the example count"
        if valid is not None and valid >= examples
        else f"the time budget ({budget_s / 60:g} min)"
    )
    failure_md = "\n\n".join(
        f"### Chunk {f['chunk']} (hypothesis seed {f['seed']})\n\n```\n{f['report']}\n```"
        for f in failures
    )
    final = outcome["final_failure"]
    if final is not None:
        failure_md += f"\n\n### End-of-run checks\n\n```\n{final}\n```"
    counts = result.counts if result else {}
    kinds = ", ".join(f"{k[6:]} {v:,}" for k, v in sorted(counts.items()) if k.startswith("frame_"))
    abandoned = counts.get("http_abandoned_mid_body", 0) + counts.get(
        "http_abandoned_mid_answer", 0
    )
    first, top, end = (rss[0], max(rss), rss[-1]) if rss else ("n/a",) * 3
    md = f"""# Protocol fuzzer, long run{" (quick)" if quick else ""}

benchmarks/fuzz.py: the state machine of tests/e2e/test_fuzz.py ({STEPS} steps an example:
WebSocket bursts of valid and malformed frames, cancels and duplicates of ids in flight,
connections closed or dropped mid-answer, `POST /v1/chat` bodies and abandoned HTTP
requests) against one in-process chatd and its simulated LLM, every invariant checked
after every example, a bystander connection streaming answers throughout.

- examples asked: {examples:,}, time budget {budget_s / 60:g} min; stopped by {stopped}
- **hypothesis examples (valid): {valid if valid is not None else "n/a"}**; sequences run
  against chatd: {sequences:,} (hypothesis cuts some short when its buffer fills; those
  are checked all the same)
- seed: {run_seed} (chunk n uses {run_seed} + n; `CHATD_FUZZ_SEED={run_seed} python
  benchmarks/fuzz.py` runs it again)
- time: {seconds / 60:.1f} min, {data["sequences_per_s"]} sequences/s
- **failures: {len(failures)}** in the examples; end-of-run checks (no connection,
  request or LLM stream left; the bystander's {data["bystander_answers"]} answers all
  whole): {"passed" if final is None else "FAILED"}
- frames sent: {counts.get("frames", 0):,} ({kinds}); HTTP requests
  {counts.get("http", 0):,}, abandoned {abandoned:,}; connections
  {counts.get("connections", 0):,}; events read {counts.get("events", 0):,}
- memory (RSS after gc and `malloc_trim`, after each run of {CHUNK}): first {first} MiB,
  max {top}, last {end}, at the end {data["rss_end_mib"]}; slope over the second half
  {data["rss_slope_mib_per_10k_sequences"]} MiB per 10,000 sequences (CI allows
  {MEMORY_TOLERANCE:.0%} over 1,800 examples)

## Failures

{failure_md or "None."}

Found by the fuzzer and fixed: a WebSocket frame's size was counted in characters,
not bytes; `test_frame_limit_counts_bytes` (tests/e2e/test_fuzz.py) keeps it fixed, and
the model counts bytes.

## Machine

{machine_markdown(machine)}
"""
    return data, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--budget-min", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="1,000 examples")
    args = parser.parse_args()
    examples = 1_000 if args.quick else args.examples
    seed = args.seed if args.seed is not None else os.environ.get("CHATD_FUZZ_SEED")
    run_seed = int(seed if seed not in (None, "") else LONG_RUN_SEED)
    budget_s = args.budget_min * 60
    print(f"fuzz seed {run_seed}, {examples} examples, budget {args.budget_min:g} min", flush=True)
    machine = describe_machine()  # before the run: its load average is the one at the start
    outcome = trio.run(run, examples, budget_s, run_seed)
    data, md = report(outcome, examples, budget_s, run_seed, args.quick, machine)
    write_results(RESULTS, "fuzz-quick" if args.quick else "fuzz", data, md)


if __name__ == "__main__":
    main()
