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

(The routing itself is :mod:`chatd.llm.sim.builtin`; the plans and rules
are :mod:`chatd.llm.sim.types`.)

Only tools the request offers are called. ``tool_choice`` is honoured:
``"none"`` answers in text, ``"required"`` always calls a tool, a named
function is called whatever the message. When the conversation ends in tool
results, the answer comes from them, one line per result, and calls
nothing: text verbatim; from data (JSON, as chatd's FAQ tool gives), its
answer, or a short "not sure"; after a tool's error, that it could not.

A rules file (:func:`chatd.llm.sim.rules_file.load_rules`) replaces the
built-in rules with an ordered list of regular expressions; see that
function for its format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from chatd.llm.sim.builtin import MAX_CALLS, builtin_calls, default_arguments, find_expression
from chatd.llm.sim.small_talk import (
    compose_reply,
    small_talk_reply,
)
from chatd.llm.sim.types import Plan, Rule, Rules, TextPlan, ToolCall, ToolCallsPlan

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


def default_rules() -> Rules:
    """The built-in rules of protocol.md §3."""
    return Rules()


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
            calls = builtin_calls(text, said[:-1], offered)
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
        return ToolCallsPlan(tuple(chosen or [ToolCall(forced, default_arguments(forced, text))]))
    if choice == "required" and offered and not calls:
        name = "frequently_asked" if "frequently_asked" in offered else sorted(offered)[0]
        calls = [ToolCall(name, default_arguments(name, text))]
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
