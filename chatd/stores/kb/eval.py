"""How well the knowledge base answers the way people ask: the labelled set.

``chatd/data/faq_eval.jsonl`` holds customers' phrasings of the sample FAQ's
questions, each labelled with the entry that answers it, and off-topic
messages labelled ``null``; each line is in the ``tune`` or the ``test`` half.
Thresholds are chosen on ``tune`` and reported on ``test``, so the figures
that are quoted never scored the choices they judge.

:func:`evaluate` asks a knowledge base every case and counts, at a given
confidence gate, what Path B would have done: answered with the right entry
(*hit*), with another entry (*wrong*), not at all (*miss*), and for an
off-topic message, answered from the FAQ at all (*off-topic answered*).
``chatd kb eval`` prints it; the knowledge-base contract tests hold every
backend to the same figures.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from chatd.exceptions import ConfigError
from chatd.stores.kb.base import KnowledgeBase, jsonl_rows

__all__ = ["EvalCase", "EvalReport", "Verdict", "evaluate", "load_eval_set", "verdict"]

SPLITS = ("tune", "test")


@attrs.frozen
class EvalCase:
    """A message and the FAQ question that answers it (``None``: off-topic)."""

    text: str
    question: str | None
    split: str


@attrs.frozen
class Verdict:
    """What one case got: the best entry's question and its confidence."""

    case: EvalCase
    answered: str | None
    best: str | None
    confidence: float

    @property
    def outcome(self) -> str:
        """``hit``, ``wrong`` or ``miss`` for a FAQ phrasing; ``answered`` or
        ``refused`` for an off-topic one."""
        if self.case.question is None:
            return "refused" if self.answered is None else "answered"
        if self.answered is None:
            return "miss"
        return "hit" if self.answered.casefold() == self.case.question.casefold() else "wrong"


@attrs.frozen
class EvalReport:
    """The verdicts on one set of cases at one gate, and their rates."""

    gate: float
    verdicts: tuple[Verdict, ...]

    def count(self, outcome: str) -> int:
        """How many cases had ``outcome``."""
        return sum(1 for v in self.verdicts if v.outcome == outcome)

    @property
    def phrasings(self) -> int:
        """Cases with an entry to find."""
        return sum(1 for v in self.verdicts if v.case.question is not None)

    @property
    def off_topic(self) -> int:
        """Cases no entry answers."""
        return len(self.verdicts) - self.phrasings

    def rate(self, outcome: str) -> float:
        """The share of the cases of its kind (phrasings or off-topic) with ``outcome``."""
        whole = self.off_topic if outcome in ("answered", "refused") else self.phrasings
        return self.count(outcome) / whole if whole else 0.0

    def at(self, gate: float) -> EvalReport:
        """The same answers judged at another gate (no new searches)."""
        return EvalReport(
            gate,
            tuple(
                attrs.evolve(v, answered=v.best if v.confidence >= gate else None)
                for v in self.verdicts
            ),
        )

    def split(self, name: str) -> EvalReport:
        """Only the cases of one half."""
        return EvalReport(self.gate, tuple(v for v in self.verdicts if v.case.split == name))


def verdict(case: EvalCase, best: str | None, confidence: float, gate: float) -> Verdict:
    """One case's verdict from its best passage."""
    return Verdict(
        case, best if best is not None and confidence >= gate else None, best, confidence
    )


async def evaluate(kb: KnowledgeBase, cases: Iterable[EvalCase], gate: float) -> EvalReport:
    """Search ``kb`` for every case, as ``frequently_asked`` does, and judge at ``gate``."""
    verdicts = []
    for case in cases:
        passages = await kb.search(case.text, limit=3)
        best = passages[0] if passages else None
        verdicts.append(
            verdict(case, best.question if best else None, best.confidence if best else 0.0, gate)
        )
    return EvalReport(gate, tuple(verdicts))


def load_eval_set(path: str | Path | None = None) -> list[EvalCase]:
    """The labelled set at ``path``, or the one shipped for the sample FAQ."""
    if path is None:
        resource = importlib.resources.files("chatd.data").joinpath("faq_eval.jsonl")
        text = resource.read_text(encoding="utf-8")
        where = "chatd/data/faq_eval.jsonl"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        where = str(path)
    return _cases(text.splitlines(), where)


def _cases(lines: Sequence[str], where: str) -> list[EvalCase]:
    cases = []
    for number, row in jsonl_rows(lines, where):
        text, question, split = (row.get(k) for k in ("text", "question", "split"))
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}:{number}: 'text' must be a non-empty string")
        if question is not None and not isinstance(question, str):
            raise ConfigError(f"{where}:{number}: 'question' must be a string or null")
        if split not in SPLITS:
            raise ConfigError(f"{where}:{number}: 'split' must be one of {', '.join(SPLITS)}")
        cases.append(EvalCase(text, question, split))
    return cases
