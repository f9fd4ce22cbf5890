"""Rules files for the simulated LLM (``chatd sim-llm --rules FILE``): an
ordered list of regular expressions, each with tool calls (whose arguments
may use the match's groups) or a reply text, in TOML or JSON; a bad file is
one :class:`~chatd.exceptions.ConfigError` naming the rule and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from os import PathLike
from pathlib import Path
from typing import Any

import orjson

from chatd.exceptions import ConfigError
from chatd.llm.sim.rules import expand
from chatd.llm.sim.types import Rule, Rules, ToolCall

__all__ = ["load_rules"]


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
        expand(value, probe)
    except (re.error, IndexError) as exc:
        raise _RuleError(f"bad group reference in {value!r}: {exc}") from exc
