"""What the simulated LLM says: deterministic rules from request to plan.

:func:`plan_reply` reads a chat-completions request body and decides, with no
randomness, either a text answer (:class:`TextPlan`) or tool calls
(:class:`ToolCallsPlan`); the server then streams that plan. The built-in
rules (protocol.md §3), applied to the last user message:

- an arithmetic expression calls ``calculator`` with ``{"expression": ...}``;
- a question about the current time or date calls ``clock`` with ``{}``;
- both in one message call both, calculator first;
- any other question calls ``frequently_asked`` with ``{"question": ...}``;
- anything else is answered as text (:func:`compose_reply`).

Only tools the request offers are called. ``tool_choice`` is honoured:
``"none"`` answers in text, ``"required"`` always calls a tool, a named
function is called whatever the message. When the conversation ends in tool
results, the answer quotes each result verbatim and calls nothing.

A rules file (:func:`load_rules`) replaces the built-in rules with an ordered
list of regular expressions; see that function for its format.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import attrs
import orjson

from chatd.exceptions import ConfigError
from chatd.llm.sim.small_talk import compose_reply

__all__ = [
    "Plan",
    "Rule",
    "Rules",
    "TextPlan",
    "ToolCall",
    "ToolCallsPlan",
    "default_rules",
    "find_expression",
    "load_rules",
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


def _is_question(text: str) -> bool:
    stripped = text.strip()
    return stripped.endswith("?") or bool(_INTERROGATIVE.match(stripped))


def _builtin_calls(text: str, offered: set[str]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    expression = find_expression(text)
    if expression is not None and "calculator" in offered:
        calls.append(ToolCall("calculator", {"expression": expression}))
    if "clock" in offered and _CLOCK.search(text):
        calls.append(ToolCall("clock", {}))
    if not calls and "frequently_asked" in offered and _is_question(text):
        calls.append(ToolCall("frequently_asked", {"question": text}))
    return calls


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
    text = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    offered = _offered_tools(body)
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        offered = set()

    reply: str | None = None
    calls: list[ToolCall] = []
    if rules.builtin:
        calls = _builtin_calls(text, offered)
    else:
        for rule in rules.entries:
            match = rule.pattern.search(text)
            if match is None:
                continue
            if rule.reply is not None:
                reply = match.expand(rule.reply)
                break
            if offered and all(call.name in offered for call in rule.tool_calls):
                calls = [ToolCall(c.name, _expand(c.arguments, match)) for c in rule.tool_calls]
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
    names: dict[str, str] = {}
    for message in reversed(messages[: len(messages) - len(results)]):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    names[str(call.get("id"))] = str(call["function"].get("name"))
            break
    lines = []
    for result in results:
        name = names.get(str(result.get("tool_call_id"))) or result.get("name") or "the tool"
        lines.append(f"Based on {name}: {_text(result)}")
    return "\n".join(lines)


def _expand(value: Any, match: re.Match[str]) -> Any:
    """``value`` with every string in it expanded with ``match``'s groups."""
    if isinstance(value, str):
        return match.expand(value)
    if isinstance(value, dict):
        return {key: _expand(item, match) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, match) for item in value]
    return value


# --- rules files ------------------------------------------------------------------------


class _RuleError(Exception):
    pass


def load_rules(path: str | PathLike[str]) -> Rules:
    """Read a rules file (TOML or JSON, by extension) that replaces the built-in rules.

    The file holds ``rules``, an ordered list; each rule has a ``pattern``
    (a regular expression searched case-insensitively in the last user
    message) and either ``reply`` (text) or ``tool_calls`` (a list of
    ``{name, arguments}``). Replies and the strings inside arguments may use
    the match's groups as ``\\1`` or ``\\g<name>``. The first matching rule
    wins; a tool-call rule is skipped when the request does not offer all of
    its tools. A JSON file may also be the bare list. Raises
    :class:`ConfigError` naming the file and the problem.
    """
    file = Path(path)
    kind = file.suffix.lower()
    if kind not in {".toml", ".json"}:
        raise ConfigError(f"rules file {file}: expected a .toml or .json file")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"rules file {file}: cannot read it: {exc.strerror}") from exc
    try:
        data: Any = tomllib.loads(raw.decode()) if kind == ".toml" else orjson.loads(raw)
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"rules file {file}: not valid {kind[1:].upper()}: {problem}") from exc
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if not isinstance(data, list):
        raise ConfigError(f'rules file {file}: expected a list under "rules"')
    entries = []
    for number, entry in enumerate(data, start=1):
        try:
            entries.append(_parse_rule(entry))
        except _RuleError as exc:
            raise ConfigError(f"rules file {file}: rule {number}: {exc}") from exc
    return Rules(entries=tuple(entries), builtin=False, source=str(file))


def _parse_rule(entry: object) -> Rule:
    if not isinstance(entry, dict):
        raise _RuleError("expected a table with pattern and reply or tool_calls")
    unknown = set(entry) - {"pattern", "reply", "tool_calls"}
    if unknown:
        raise _RuleError(f"unknown key {sorted(unknown)[0]!r}")
    source = entry.get("pattern")
    if not isinstance(source, str):
        raise _RuleError("pattern must be a string")
    try:
        pattern = re.compile(source, re.IGNORECASE)
    except re.error as exc:
        raise _RuleError(f"pattern {source!r} is not a valid regular expression: {exc}") from exc
    if ("reply" in entry) == ("tool_calls" in entry):
        raise _RuleError("needs exactly one of reply or tool_calls")
    if "reply" in entry:
        reply = entry["reply"]
        if not isinstance(reply, str):
            raise _RuleError("reply must be a string")
        _check_template(pattern, reply)
        return Rule(pattern, reply=reply)
    calls = entry["tool_calls"]
    if not isinstance(calls, list) or not calls:
        raise _RuleError("tool_calls must be a non-empty list")
    parsed = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise _RuleError("each tool call needs a name")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict) or set(call) - {"name", "arguments"}:
            raise _RuleError(f"tool call {call['name']!r}: only name and an arguments table")
        _check_template(pattern, arguments)
        parsed.append(ToolCall(call["name"], arguments))
    return Rule(pattern, tool_calls=tuple(parsed))


def _check_template(pattern: re.Pattern[str], value: Any) -> None:
    """Fail at load time, not per request, on group references the pattern lacks."""
    # An always-matching twin of the pattern has the same groups; a template
    # that expands against it expands against every real match.
    probe = re.compile(pattern.pattern + "|", pattern.flags).search("")
    if probe is None:  # e.g. a verbose pattern ending in a comment: cannot check
        return
    try:
        _expand(value, probe)
    except (re.error, IndexError) as exc:
        raise _RuleError(f"bad group reference in {value!r}: {exc}") from exc
