"""The simulated LLM's built-in routing: which tools a message calls, as a
sensible small model would: arithmetic the calculator, the time the clock,
shop questions the FAQ (without the greeting around them), several requests
in one message several calls, a follow-up the FAQ with the question before
it. :func:`~chatd.llm.sim.rules.plan_reply` asks it when no rules file is
in force.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from chatd.llm.sim.small_talk import is_small_talk, strip_pleasantries
from chatd.llm.sim.types import ToolCall

__all__ = ["MAX_CALLS", "builtin_calls", "default_arguments", "find_expression"]


# --- the built-in rules -----------------------------------------------------------------

_EXPRESSION_RUN = re.compile(r"[\d.+\-*/^%()\s]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BINARY = re.compile(r"[\d.)]\s*[-+*/^%]\s*[-(.\d]")
_NEGATIVE = {f"-{digit}" for digit in "0123456789"} | {"-("}
_DATE = re.compile(r"\d{1,4}([-/.])\d{1,2}\1\d{1,4}")
# About the current time or date, not any sentence with "time" or "today" in
# it ("how are you today" is small talk, "what time is it" is not).
_CLOCK = re.compile(
    r"\bwhat(?:'s|\s+is)?\s+(?:the\s+)?(?:current\s+|local\s+)?(?:time|date|day|year|month)\b"
    r"|\bwhich\s+(?:day|year|month)\b"
    r"|\bthe\s+(?:current\s+|local\s+)?(?:time|date)\b"
    r"|\b(?:current|local)\s+(?:time|date)\b"
    r"|\btime\s+(?:is\s+it|now)\b"
    r"|\btoday'?s\s+date\b|\bwhat(?:'s|\s+is)\s+today\b"
    r"|\bday\s+of\s+the\s+week\b|\bclock\b",
    re.IGNORECASE,
)
_INTERROGATIVE = re.compile(
    r"(?:what|what's|who|whom|whose|which|when|where|why|how|is|are|am|was|were|can|could"
    r"|do|does|did|should|would|will|shall|may|might|must|has|have|had)\b",
    re.IGNORECASE,
)


def find_expression(text: str) -> str | None:
    """The first arithmetic expression in ``text`` (two numbers and an operator), as written."""
    for run in _EXPRESSION_RUN.finditer(text):
        candidate = _trim_expression(run.group())
        if (
            len(_NUMBER.findall(candidate)) >= 2
            and _BINARY.search(candidate)
            and not _DATE.fullmatch(candidate)
        ):
            return candidate
    return None


def _trim_expression(run: str) -> str:
    """Cut sentence debris off a run of expression characters; balance its parentheses."""
    text = run.strip()
    while text and not (text[0] == "(" or text[0].isdigit() or text[:2] in _NEGATIVE):
        text = text[1:].lstrip()
    while text and not (text[-1].isdigit() or text[-1] == ")"):
        text = text[:-1].rstrip()
    while text.startswith("(") and text.count("(") > text.count(")"):
        text = text[1:].lstrip()
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip()
    return text


_LEADING_CONNECTIVE = re.compile(r"(?:and|but|also|so|or)\s+", re.IGNORECASE)


def _is_question(text: str) -> bool:
    stripped = text.strip()
    if stripped.endswith("?"):
        return True
    connective = _LEADING_CONNECTIVE.match(stripped)
    return bool(_INTERROGATIVE.match(stripped, connective.end() if connective else 0))


# --- clauses, requests and follow-ups ---------------------------------------------------
#
# A message is cut into pieces at sentence ends and at "and"/"also" between
# two requests; small-talk pieces are dropped; each request takes the
# statements before it as its context ("My parcel came today. It is broken,
# what now?"). "and" splits only when the part after it starts a request of
# its own: "shipping and handling" or "2 and 3" stay one piece.

_SENTENCE_END = re.compile(r"(?<=[?!.;])\s+|\s*\n\s*")
_JOINER = re.compile(r"\s*,?\s+(?:and\s+also|and|also)\s+", re.IGNORECASE)
_FOLLOW_UP_LEAD = re.compile(
    r"(?:and|but|also|or|(?:what|how)\s+about|what\s+if)(?![\w'])", re.IGNORECASE
)
_ANAPHORA = re.compile(
    r"(?<![\w'])(?:that|it|its|it's|this|those|these|they|them|their)(?![\w'])", re.IGNORECASE
)
_FOLLOW_UP_WORDS = 8
"""A follow-up is short: longer questions carry their own topic."""
_HISTORY_TURNS = 4
"""How many earlier user messages a follow-up looks back through for its topic."""
MAX_CALLS = 8
"""The most calls one plan makes: a small model asks a few things at once, and a
long message of questions must not fan out into hundreds of tool runs."""


def _is_request(text: str) -> bool:
    """Whether ``text`` asks something: a question, a sum, or the time."""
    return _is_question(text) or find_expression(text) is not None or bool(_CLOCK.search(text))


def _starts_request(text: str) -> bool:
    """Whether ``text``, the part after an "and", is a request of its own."""
    return (
        bool(_INTERROGATIVE.match(text))
        or find_expression(text) is not None
        or bool(_CLOCK.search(text))
    )


def _pieces(text: str) -> list[tuple[int, int]]:
    """``text`` cut at sentence ends and at "and"s between requests, as (start, end) spans."""
    pieces: list[tuple[int, int]] = []
    for start, end in _spans(text, _SENTENCE_END, 0, len(text)):
        current: tuple[int, int] | None = None
        asks = False  # whether the current piece holds a request: kept, not recomputed
        for part in _spans(text, _JOINER, start, end):
            part_asks = _is_request(strip_pleasantries(text[part[0] : part[1]]))
            if current is not None and asks and _starts_request(text[part[0] : part[1]]):
                pieces.append(current)
                current = None
            if current is None:
                current, asks = part, part_asks
            else:
                current, asks = (current[0], part[1]), asks or part_asks
        if current is not None:
            pieces.append(current)
    return pieces


def _spans(text: str, separator: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """The non-empty spans of ``text[start:end]`` between matches of ``separator``."""
    spans = []
    for match in separator.finditer(text, start, end):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if end > start:
        spans.append((start, end))
    return [(a, b) for a, b in spans if text[a:b].strip()]


class _Request(NamedTuple):
    """One request of a message, with its context; ``question`` if it asks one."""

    text: str
    question: bool


def _requests(text: str) -> list[_Request]:
    """The requests in ``text``, each with its context and without pleasantries.

    A message that is one request with no pleasantries comes back whole and
    unchanged: protocol.md §3 passes "the message" to ``frequently_asked``.
    """
    kept = [(a, b) for a, b in _pieces(text) if not is_small_talk(text[a:b])]
    groups: list[tuple[int, int, bool]] = []
    begun: int | None = None
    for a, b in kept:
        begun = a if begun is None else begun
        piece = strip_pleasantries(text[a:b])
        if _is_request(piece):
            groups.append((begun, b, _is_question(piece)))
            begun = None
    if begun is not None and groups:  # statements after the last request are its context
        groups[-1] = (groups[-1][0], kept[-1][1], groups[-1][2])
    requests = [_Request(strip_pleasantries(text[a:b]), question) for a, b, question in groups]
    if len(requests) == 1 and requests[0].text == text.strip():
        return [requests[0]._replace(text=text)]
    return requests


def _is_follow_up(request: str) -> bool:
    """A short question that leans on what came before: "and how long does that take?"."""
    if len(request.split()) > _FOLLOW_UP_WORDS:
        return False
    return bool(_FOLLOW_UP_LEAD.match(request) or _ANAPHORA.search(request))


def _is_faq_question(request: _Request) -> bool:
    """A question for the FAQ, tools or not on offer: neither a sum nor about the time."""
    text = request.text
    return request.question and find_expression(text) is None and not _CLOCK.search(text)


def _topic(earlier: list[str]) -> str | None:
    """The latest question a follow-up can lean on, from the earlier user messages.

    Small talk and other follow-ups are passed over; a sum or a time question
    ends the search, since the conversation moved on from the FAQ.
    """
    for message in reversed(earlier[-_HISTORY_TURNS:]):
        requests = _requests(message)
        standalone = [r.text for r in requests if _is_faq_question(r) and not _is_follow_up(r.text)]
        if standalone:
            return standalone[-1]
        if any(not _is_faq_question(r) for r in requests):
            return None
    return None


def _with_topic(topic: str, follow_up: str) -> str:
    """The question a follow-up stands for: the earlier question, then the follow-up."""
    topic = topic.strip()
    if topic[-1:] not in {"?", ".", "!"}:
        topic += "?"
    return f"{topic} {follow_up.strip()}"


def builtin_calls(text: str, earlier: list[str], offered: set[str]) -> list[ToolCall]:
    """The built-in rules' calls for the user message ``text``, after ``earlier`` ones.

    Each request in the message is planned on its own; then the calls go
    calculator first, then clock, then frequently_asked, each once. Keeping
    frequently_asked last also keeps it off index 0 in a mixed message, where
    a caller that guesses a natural-answer tool's arguments from the whole
    message (chatd's Path B does) would guess wrong.
    """
    sums: list[ToolCall] = []
    clocks: list[ToolCall] = []
    faq: list[ToolCall] = []
    asked: list[str] = []  # this message's standalone FAQ questions, for its follow-ups
    history: str | None = None  # the earlier messages' topic, read at most once
    history_read = False
    for request, is_question in _requests(text):
        expression = find_expression(request)
        planned = False
        if expression is not None and "calculator" in offered:
            sums.append(ToolCall("calculator", {"expression": expression}))
            planned = True
        if "clock" in offered and _CLOCK.search(request):
            clocks.append(ToolCall("clock", {}))
            planned = True
        if planned or "frequently_asked" not in offered or not is_question:
            continue
        question = request
        if _is_follow_up(request):
            if not asked and not history_read:
                history, history_read = _topic(earlier), True
            topic = asked[-1] if asked else history
            if topic is not None:
                question = _with_topic(topic, request)
        else:
            asked.append(request)
        faq.append(ToolCall("frequently_asked", {"question": question}))
    calls: list[ToolCall] = []
    for call in (*sums, *clocks, *faq):
        if call not in calls:  # never the same tool twice with the same arguments
            calls.append(call)
    return calls[:MAX_CALLS]


def default_arguments(name: str, text: str) -> dict[str, Any]:
    """Arguments for a tool the request forces us to call."""
    if name == "calculator":
        return {"expression": find_expression(text) or text}
    if name == "frequently_asked":
        return {"question": text}
    return {}
