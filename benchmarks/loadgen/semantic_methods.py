"""The semantic scenario's retrieval methods and how they are judged: each method gives one
best entry and a confidence per case (:class:`Picks`); a gate on the confidence is chosen on
the ``tune`` split within the limits on wrong entries and off-topic answers, and the gated
answers counted per split (:class:`Judged`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadgen.semantic_cases import Cases
from loadgen.semantic_models import Variant

MAX_WRONG = 0.02
MAX_OFF_TOPIC = 0.05
RRF_KS = (10, 30, 60, 100)
WEIGHTS = tuple(round(w * 0.1, 1) for w in range(11))


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
