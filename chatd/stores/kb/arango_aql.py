"""ArangoDB's side of the FAQ search (:mod:`chatd.stores.kb.arango`): the
documents written, the one AQL query that fetches candidates and the
statistics the shared ranking needs, and the passages made of its result.
User text reaches AQL only as bind variables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from chatd.stores.kb.base import FAQEntry
from chatd.stores.kb.rank import CANDIDATES, Candidate, Passage, rank

__all__ = [
    "ADD",
    "ANALYZER",
    "FIELDS",
    "SYNC_VIEW",
    "documents",
    "entry_key",
    "passages",
    "search_query",
]

ANALYZER = "text_en"
# Field weights for BM25, as in the SQLite backend: the question says what an
# entry is about; tags are its curated synonyms; the answer mentions much.
FIELDS = (("question", 4.0), ("answer", 1.0), ("tags", 2.0))
_PREFIX_MIN_CHARS = 4  # shorter terms match whole stems only, as in SQLite

ADD = """
FOR doc IN @entries
  UPSERT { _key: doc._key }
  INSERT doc
  UPDATE { answer: doc.answer, tags: doc.tags }
  IN @@collection
  RETURN OLD == null OR OLD.answer != NEW.answer OR OLD.tags != NEW.tags
"""
# Makes the view commit what was written, and waits for it.
SYNC_VIEW = "FOR doc IN @@view SEARCH true OPTIONS { waitForSync: true } LIMIT 1 RETURN 1"


def entry_key(question: str) -> str:
    """The document key of a question: equal for questions equal ignoring case."""
    return hashlib.blake2b(question.casefold().encode(), digest_size=16).hexdigest()


def documents(entries: Sequence[FAQEntry]) -> list[dict[str, Any]]:
    """Documents for ``entries``; of questions equal ignoring case, the last wins
    (one ``UPSERT`` query must not write the same key twice)."""
    documents = {
        entry_key(e.question): {"question": e.question, "answer": e.answer, "tags": list(e.tags)}
        for e in entries
    }
    return [{"_key": key, **document} for key, document in documents.items()]


# --- Searching -------------------------------------------------------------------------


def _is_prefix(term: str) -> bool:
    return len(term) >= _PREFIX_MIN_CHARS


def _match(doc: str, field: str, param: str, prefix: bool) -> str:
    """A SEARCH condition: the field has the stem of term ``@param`` (or a stem
    starting with it). TOKENS stems the term as the view stemmed the field."""
    stems = f"TOKENS(@{param}, '{ANALYZER}')"
    return f"STARTS_WITH({doc}.{field}, {stems})" if prefix else f"{doc}.{field} IN {stems}"


def search_query(terms: Sequence[str], limit: int) -> tuple[str, dict[str, Any]]:
    """The AQL of one search and its bind variables (but ``@view``, ``@collection``).

    Only generated names (``@t0``, ``d0``) reach the query text; the terms
    themselves are bind variables, so no user text is ever parsed as AQL.
    """
    params = [f"t{index}" for index in range(len(terms))]
    prefixes = [_is_prefix(term) for term in terms]
    ranked = " OR ".join(
        "BOOST("
        + " OR ".join(_match("d", field, p, pre) for p, pre in zip(params, prefixes, strict=True))
        + f", {weight})"
        for field, weight in FIELDS
    )
    term_rows = ",\n    ".join(
        f"{{ df: FIRST("
        f"FOR d{i} IN @@view SEARCH ANALYZER({_match(f'd{i}', 'question', p, pre)} OR "
        f"{_match(f'd{i}', 'tags', p, pre)}, '{ANALYZER}') "
        f"COLLECT WITH COUNT INTO n{i} RETURN n{i}) }}"
        for i, (p, pre) in enumerate(zip(params, prefixes, strict=True))
    )
    query = f"""
LET candidates = (
  FOR d IN @@view
    SEARCH ANALYZER({ranked}, '{ANALYZER}')
    LET score = BM25(d)
    SORT score DESC
    LIMIT @limit
    RETURN {{ question: d.question, answer: d.answer, tags: d.tags, score: score }}
)
RETURN {{
  candidates: candidates,
  documents: FIRST(FOR e IN @@collection COLLECT WITH COUNT INTO n RETURN n),
  terms: [
    {term_rows}
  ]
}}
"""
    bind: dict[str, Any] = {
        "limit": max(limit, CANDIDATES),
        **dict(zip(params, terms, strict=True)),
    }
    return query, bind


def passages(result: Mapping[str, Any], terms: Sequence[str], limit: int) -> list[Passage]:
    """Passages from one search query's result, best first, with confidence."""
    candidates = [
        Candidate(c["question"], c["answer"], tuple(c["tags"]), float(c["score"]))
        for c in result["candidates"]
    ]
    frequencies = [int(row["df"] or 0) for row in result["terms"]]
    return rank(terms, candidates, frequencies, int(result["documents"] or 0), limit)
