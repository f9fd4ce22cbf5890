"""The semantic scenario's eval cases as arrays (:class:`Cases`): what is true, and what
chatd's lexical search finds for each, searched (and timed) in a temporary SQLite knowledge
base."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatd.stores.kb import FAQEntry
from chatd.stores.kb.eval import EvalCase
from chatd.stores.kb.sqlite import open_sqlite_knowledge_base
from loadgen.semantic_cost import wait_for_lock


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
