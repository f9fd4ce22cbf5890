"""What the simulated LLM decides (a :data:`Plan`) and the rules it decides by."""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["Plan", "Rule", "Rules", "TextPlan", "ToolCall", "ToolCallsPlan"]


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
