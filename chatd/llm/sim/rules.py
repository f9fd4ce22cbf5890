"""What the simulated LLM says: deterministic rules from request to plan.

:func:`plan_reply` reads a chat-completions request body and decides, with no
randomness, either a text answer (:class:`TextPlan`) or tool calls
(:class:`ToolCallsPlan`); the server then streams that plan. The built-in
rules (protocol.md §3, refined as a sensible small model routes), applied to
the last user message:

- small talk alone ("hi", "thanks!", "who are you?", "ok", "bye") is answered
  in kind, as text, with what the assistant can help with (small_talk.py);
- otherwise the message is cut into requests at sentence ends and at
  "and"/"also" between two requests ("what's 2+2 and how do I reset my
  password"), and each is planned on its own, its greetings and fillers
  taken off ("hi, quick question: ..."): an arithmetic expression calls
  ``calculator`` with ``{"expression": ...}``, a question about the current
  time or date calls ``clock`` with ``{}``, any other question calls
  ``frequently_asked`` with ``{"question": ...}``;
- the calls go calculator first, then clock, then frequently_asked, the
  same tool never twice with the same arguments, at most :data:`MAX_CALLS`;
- a message that is one question with no wrapper is passed whole, unchanged;
- a short question that leans on what came before ("and how long does that
  take?", "what about for international orders?") asks the FAQ the earlier
  question followed by itself: the earlier one in the same message, or the
  last FAQ question of the earlier user messages;
- anything else is answered as text (:func:`compose_reply`).

Only tools the request offers are called. ``tool_choice`` is honoured:
``"none"`` answers in text, ``"required"`` always calls a tool, a named
function is called whatever the message. When the conversation ends in tool
results, the answer quotes each result verbatim, one line per result, and
calls nothing.

A rules file (:func:`load_rules`) replaces the built-in rules with an ordered
list of regular expressions; see that function for its format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs
import orjson

from chatd.llm.sim.small_talk import (
    compose_reply,
    is_small_talk,
    small_talk_reply,
    strip_pleasantries,
)

__all__ = [
    "MAX_CALLS",
    "Plan",
    "Rule",
    "Rules",
    "TextPlan",
    "ToolCall",
    "ToolCallsPlan",
    "default_rules",
    "expand",
    "find_expression",
    "plan_reply",
    "tokenize",
]

# A token is a word or one punctuation mark, carrying the whitespace before
# it; trailing whitespace is a token of its own. The three cases cover every
# character, so the tokens always join back into the text.
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into LLM-like tokens; ``"".join(tokenize(t)) == t`` always."""
    return _TOKEN.findall(text)


@attrs.frozen
class ToolCall:
    """One function call the model makes: a tool name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]


@attrs.frozen
class TextPlan:
    """Answer with this text."""

    text: str


@attrs.frozen
class ToolCallsPlan:
    """Answer by calling these tools, in this order."""

    calls: tuple[ToolCall, ...]


Plan = TextPlan | ToolCallsPlan


@attrs.frozen
class Rule:
    """One rules-file entry: a pattern and either a reply or tool calls."""

    pattern: re.Pattern[str]
    reply: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@attrs.frozen
class Rules:
    """The rule set in force: the built-in rules, or the entries of a rules file."""

    entries: tuple[Rule, ...] = ()
    builtin: bool = True
    source: str = "built-in"


def default_rules() -> Rules:
    """The built-in rules of protocol.md §3."""
    return Rules()


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


def _builtin_calls(text: str, earlier: list[str], offered: set[str]) -> list[ToolCall]:
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


def _default_arguments(name: str, text: str) -> dict[str, Any]:
    """Arguments for a tool the request forces us to call."""
    if name == "calculator":
        return {"expression": find_expression(text) or text}
    if name == "frequently_asked":
        return {"question": text}
    return {}


# --- planning ---------------------------------------------------------------------------


def plan_reply(body: Mapping[str, Any], rules: Rules) -> Plan:
    """Decide, deterministically, how to answer the chat-completions request ``body``."""
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    quoted = _quote_tool_results(messages)
    if quoted is not None:
        return TextPlan(quoted)
    said = [_text(m) for m in messages if m.get("role") == "user"]
    text = said[-1] if said else ""
    offered = _offered_tools(body)
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        offered = set()

    reply: str | None = None
    calls: list[ToolCall] = []
    if rules.builtin:
        reply = small_talk_reply(text)
        if reply is None:
            calls = _builtin_calls(text, said[:-1], offered)
    else:
        for rule in rules.entries:
            match = rule.pattern.search(text)
            if match is None:
                continue
            if rule.reply is not None:
                reply = match.expand(rule.reply)
                break
            if offered and all(call.name in offered for call in rule.tool_calls):
                calls = [ToolCall(c.name, expand(c.arguments, match)) for c in rule.tool_calls]
                break

    forced = _forced_function(choice)
    if forced is not None and forced in offered:
        chosen = [c for c in calls if c.name == forced][:1]
        return ToolCallsPlan(tuple(chosen or [ToolCall(forced, _default_arguments(forced, text))]))
    if choice == "required" and offered and not calls:
        name = "frequently_asked" if "frequently_asked" in offered else sorted(offered)[0]
        calls = [ToolCall(name, _default_arguments(name, text))]
    if calls:
        return ToolCallsPlan(tuple(calls))
    return TextPlan(reply if reply is not None else compose_reply(text))


def _text(message: Mapping[str, Any]) -> str:
    """A message's content as text: a string, or the text parts of a list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _offered_tools(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _forced_function(choice: object) -> str | None:
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def _quote_tool_results(messages: list[Mapping[str, Any]]) -> str | None:
    """When the conversation ends in tool results, an answer quoting each verbatim."""
    results: list[Mapping[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    if not results:
        return None
    results.reverse()
    return "\n".join(_from_result(_text(result)) for result in results)


def _from_result(text: str) -> str:
    """What a sensible small model says from one tool result: plain text
    verbatim; from data (a JSON object, as chatd's FAQ tool gives), its
    ``answer``, or, without one, that it is not sure (naming the closest
    candidate) or does not know; after an ``error``, that it could not, and why."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if not isinstance(data, dict):
        return text
    if "error" in data:
        return f"Sorry, I couldn't do that: {data['error']}."
    if "answer" not in data:
        return text
    if isinstance(data["answer"], str):
        return data["answer"]
    candidates = [c for c in data.get("candidates") or () if isinstance(c, dict)]
    if candidates and isinstance(candidates[0].get("question"), str):
        return f"I'm not sure I can answer that. Did you mean: {candidates[0]['question']}"
    return "I don't know the answer to that, sorry."


def expand(value: Any, match: re.Match[str]) -> Any:
    """``value`` with every string in it expanded with ``match``'s groups."""
    if isinstance(value, str):
        return match.expand(value)
    if isinstance(value, dict):
        return {key: expand(item, match) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item, match) for item in value]
    return value
