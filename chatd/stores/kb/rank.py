"""From a customer's words to the FAQ entry meant, and how sure that is.

Every backend does the same two things with a query. It asks its own index
(SQLite FTS5, an ArangoSearch view) for a handful of candidates by BM25 over
the query's :func:`query_terms`, with each term's document frequency; then
:func:`rank` reads the candidates' text with one analyser, here, and orders
and scores them. So what counts as a match, and how confident it is, is the
same code on every backend; only the candidate search differs.

The analyser (:func:`stems`): case and accents folded, apostrophes dropped,
the phrases of :data:`LEXICON` rewritten to the FAQ's own words ("send it
back" is "return", "money back" is "refund"), stop words and chat filler
("hi", "quick question", "asap") dropped, each word stemmed with the
Snowball English stemmer (as ArangoDB's ``text_en`` analyser stems).

:func:`rank` orders candidates by ``coverage * fit`` and gives each a
confidence, in [0, 1], from its strength ``coverage * sqrt(fit)``:

- ``coverage``: the IDF-weighted share of the query's terms the entry holds
  (in its question or tags fully, only in its answer half). A term that no
  entry holds anywhere ("canada", "lamp", "for my sister") is the user's own
  detail, not a sign of another topic: it weighs :data:`UNKNOWN_WEIGHT` of
  its IDF, so added detail dents the confidence without collapsing it. A
  term other entries hold and this one lacks counts in full: it says the
  user asked about something else.
- ``fit``: the share of the entry question's terms the query accounts for
  (a term found only in the tags counts half).

The confidence is the chance that the entry is the one meant, as a logistic
fit of the strength estimates it (:data:`CALIBRATION`). (``margin``, the lead
over the runner-up, is measured too; on the tune half it added nothing that
coverage and fit did not already say.) The constants were chosen on the
``tune`` half of the labelled set
(``chatd/data/faq_eval.jsonl``, :mod:`chatd.stores.kb.eval`), never the
``test`` half that the quoted figures come from.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import attrs
import snowballstemmer  # type: ignore[import-untyped]

from chatd.stores.kb.words import LEXICON_TEXT, STOP_WORDS_TEXT

__all__ = [
    "CANDIDATES",
    "LEXICON",
    "MAX_QUERY_TERMS",
    "STOP_WORDS",
    "Candidate",
    "Passage",
    "query_terms",
    "rank",
    "stems",
    "term_weight",
]


@attrs.frozen
class Passage:
    """A search hit: the entry, its backend ``score`` (BM25, higher is better)
    and a ``confidence`` in [0, 1] that it answers the query."""

    question: str
    answer: str
    tags: tuple[str, ...]
    score: float
    confidence: float


@attrs.frozen
class Candidate:
    """An entry a backend's index found for a query, with its BM25 score."""

    question: str
    answer: str
    tags: tuple[str, ...]
    score: float


STOP_WORDS = frozenset(STOP_WORDS_TEXT.split())


def _parse_lexicon(text: str) -> dict[str, str]:
    """``canonical: variant, ...`` lines (continued on lines without a colon)."""
    variants: dict[str, str] = {}
    canonical = ""
    for line in text.splitlines():
        head, colon, rest = line.partition(":")
        if colon:
            canonical, line = head.strip(), rest
        for variant in line.split(","):
            if variant.strip():
                variants[_fold(" ".join(variant.split()))] = canonical
    return variants


_SEND_BACK = re.compile(
    r"\b(?:send|sent|sending|ship|post|mail|bring|take|give)(?: \w+){0,3} back\b"
)
_FILLER = re.compile(
    r"\b(?:quick question|just wondering|i was wondering|wondering if|thanks in advance"
    r"|thank you in advance|if possible|as soon as possible|by the way)\b"
)

CANDIDATES = 10
"""How many entries a backend's index proposes for :func:`rank` to order."""

MAX_QUERY_TERMS = 32
"""Significant terms kept from one query: bounds the work a long message causes."""

UNKNOWN_WEIGHT = 0.6
"""How much of its IDF a query term that no entry holds weighs against coverage."""
CALIBRATION = (-2.53, 11.53)
"""A logistic fit, on the tune half, of "the best candidate is the entry meant"
(off-topic messages count as not) against its :attr:`Evidence.strength`:
confidence = 1 / (1 + exp(-(a + b * strength))). A strength of 0.32 is a
confidence of 0.76; the tune half's best gate for the issue's bars (wrong
entry <= 2% of phrasings, off-topic answered <= 5%) is there."""
ANSWER_CREDIT = 0.5
"""Coverage credit for a term found only in an entry's answer."""
TAG_FIT = 0.5
"""Fit credit for a question term the query has only through the entry's tags."""
WEAK_FIT = 0.5
"""Fit credit for sharing a question word ("when", "where", "why", "which")."""
_WEAK = frozenset({"when", "where", "why", "which"})

# unicode61 splits on everything that is not a letter, a digit or a private-use
# character; underscore is punctuation to it. Splitting the same way keeps each
# term one FTS token.
_TOKEN = re.compile(r"[^\W_]+")
_APOSTROPHES = re.compile(r"['\u2019\u2018`´]")


class _Stemmer(threading.local):
    """One Snowball stemmer per thread: a stemmer keeps the word it works on in
    itself, so two threads sharing one (the backends rank in worker threads)
    stem each other's words ("installments" came out "password"), or fail."""

    def __init__(self) -> None:
        self.english = snowballstemmer.stemmer("english")


_STEMMER = _Stemmer()


def _fold(text: str) -> str:
    """Case and accents folded, apostrophes dropped ("don't" -> "dont")."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _APOSTROPHES.sub("", text)


LEXICON: dict[str, str] = _parse_lexicon(LEXICON_TEXT)
"""Variant (a word or phrase) -> the FAQ's word for it."""

_PHRASES = re.compile(
    r"\b(?:"
    + "|".join(re.escape(v) for v in sorted(LEXICON, key=len, reverse=True) if " " in v or "-" in v)
    + r")\b"
)


def _canonical_words(text: str) -> list[str]:
    """The words of ``text`` in the FAQ's vocabulary, filler and stop words gone."""
    folded = _SEND_BACK.sub(" return ", _FILLER.sub(" ", _fold(text)))
    folded = _PHRASES.sub(lambda m: " " + LEXICON[m.group()] + " ", folded)
    words = []
    for token in _TOKEN.findall(folded):
        for word in LEXICON.get(token, token).split():
            if word not in STOP_WORDS:
                words.append(word)
    return words


def query_terms(text: str) -> list[str]:
    """The significant words of ``text`` for a backend's index: in the FAQ's
    vocabulary, stop words and filler removed, each once, in order, at most
    :data:`MAX_QUERY_TERMS`."""
    return list(dict.fromkeys(_canonical_words(text)))[:MAX_QUERY_TERMS]


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_STEMMER.english.stemWord(word))


def stems(text: str) -> list[str]:
    """``text`` as the scorer compares it: canonical words, stemmed."""
    return [_stem(word) for word in _canonical_words(text)]


def term_weight(document_frequency: int, documents: int) -> float:
    """BM25's inverse document frequency: rare terms say more about the
    entry meant than common ones; a term no entry has weighs most of all."""
    df = min(document_frequency, documents)
    return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))


@attrs.frozen
class _Fields:
    """One entry's stems, by field."""

    question: frozenset[str]
    question_terms: tuple[str, ...]
    tags: frozenset[str]
    answer: frozenset[str]


@lru_cache(maxsize=4096)
def _fields(question: str, answer: str, tags: tuple[str, ...]) -> _Fields:
    question_terms = tuple(dict.fromkeys(stems(question)))
    return _Fields(
        frozenset(question_terms),
        question_terms,
        frozenset(s for tag in tags for s in stems(tag)),
        frozenset(stems(answer)),
    )


_PREFIX_MIN = 5
_PREFIX_SLACK = 3


def _has(field: frozenset[str], stem: str) -> bool:
    """Whether a field holds the stem, or (five letters and more) one at most
    three letters longer or shorter that starts with it or that it starts
    with: "deliveri" finds "deliv", "week" does not find "weekend"."""
    if stem in field:
        return True
    if len(stem) < _PREFIX_MIN:
        return False
    return any(
        len(s) >= _PREFIX_MIN
        and abs(len(s) - len(stem)) <= _PREFIX_SLACK
        and (s.startswith(stem) or stem.startswith(s))
        for s in field
    )


def _fit(fields: _Fields, query: Iterable[str]) -> float:
    """The share of the entry question's terms the query accounts for."""
    if not fields.question_terms:
        return 0.0
    asked = frozenset(query)
    credit = 0.0
    for term in fields.question_terms:
        if _has(asked, term):
            credit += WEAK_FIT if term in _WEAK else 1.0
    # Tags are the entry's synonyms: a query term in the tags stands in for
    # one question term the query does not share, at TAG_FIT.
    spare = sum(1 for s in asked if _has(fields.tags, s) and not _has(fields.question, s))
    credit += TAG_FIT * min(spare, len(fields.question_terms) - credit)
    return min(1.0, credit / len(fields.question_terms))


@attrs.frozen
class Evidence:
    """Why a candidate may answer a query (module docstring): ``coverage``,
    ``fit`` and ``margin``; ``unknown`` is the share of the query's IDF
    weight in terms no entry holds."""

    coverage: float
    fit: float
    margin: float
    unknown: float

    @property
    def strength(self) -> float:
        """``coverage * sqrt(fit)``, in [0, 1]: how well query and entry account
        for each other."""
        return max(0.0, min(1.0, self.coverage * math.sqrt(self.fit)))

    @property
    def confidence(self) -> float:
        """The chance that the entry is the one meant, as :data:`CALIBRATION`
        estimates it from :attr:`strength`; 0 when nothing matched."""
        strength = self.strength
        if strength <= 0.0:
            return 0.0
        intercept, slope = CALIBRATION
        return 1.0 / (1.0 + math.exp(-(intercept + slope * strength)))


def weigh(
    terms: Sequence[str],
    candidates: Sequence[Candidate],
    document_frequencies: Sequence[int],
    documents: int,
) -> list[tuple[Evidence, Candidate]]:
    """Each candidate with its evidence, best first: how much of the query the
    entry holds times how much of the entry the query asks, then BM25."""
    query = [_stem(term) for term in terms]
    fields = [_fields(c.question, c.answer, c.tags) for c in candidates]
    weights = [term_weight(df, documents) for df in document_frequencies]
    known = [
        df > 0 or any(_has(f.question | f.tags | f.answer, stem) for f in fields)
        for stem, df in zip(query, document_frequencies, strict=True)
    ]
    raw = sum(weights)
    unknown = sum(w for w, k in zip(weights, known, strict=True) if not k)
    whole = raw - unknown + UNKNOWN_WEIGHT * unknown
    scored = []
    for candidate, entry in zip(candidates, fields, strict=True):
        credit = 0.0
        for stem, weight in zip(query, weights, strict=True):
            if _has(entry.question, stem) or _has(entry.tags, stem):
                credit += weight
            elif _has(entry.answer, stem):
                credit += ANSWER_CREDIT * weight
        coverage = min(1.0, credit / whole) if whole else 0.0
        scored.append((coverage, _fit(entry, query), candidate))
    scored.sort(key=lambda s: (s[0] * s[1], s[0], s[2].score), reverse=True)
    goodness = [coverage * fit for coverage, fit, _ in scored]
    weighed = []
    for index, (coverage, fit, candidate) in enumerate(scored):
        runner_up = max(goodness[:index] + goodness[index + 1 :], default=0.0)
        margin = 0.0
        if goodness[index] > 0:
            margin = max(0.0, (goodness[index] - runner_up) / goodness[index])
        evidence = Evidence(coverage, fit, margin, unknown / raw if raw else 0.0)
        weighed.append((evidence, candidate))
    return weighed


def rank(
    terms: Sequence[str],
    candidates: Sequence[Candidate],
    document_frequencies: Sequence[int],
    documents: int,
    limit: int,
) -> list[Passage]:
    """The best ``limit`` candidates for the query ``terms`` (its
    :func:`query_terms`), best first, with confidence (module docstring).
    ``document_frequencies[i]`` is how many entries hold ``terms[i]`` in their
    question or tags, as the backend's index counts them."""
    if not candidates or not terms:
        return []
    return [
        Passage(c.question, c.answer, c.tags, c.score, evidence.confidence)
        for evidence, c in weigh(terms, candidates, document_frequencies, documents)[:limit]
    ]
