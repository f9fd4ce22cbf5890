"""Checking tool arguments against the JSON-schema subset tools are declared with.

The LLM fills a tool's arguments from its ``parameters`` schema, and it gets
them wrong often enough that every call is checked before the tool runs. The
problems go back to the LLM in words it can act on, each with a JSON path:
``$.expression: expected a string, got 5``.

Supported keywords: ``type`` (one name or a list), ``properties``,
``required``, ``additionalProperties`` (``false`` or a schema), ``enum``,
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``
(numbers), ``minLength``, ``maxLength``, ``items`` (one schema),
``minItems``, ``maxItems``. Anything else (``default``, ``description``,
``format`` ...) is ignored, as JSON schema ignores keywords it does not know.
As in JSON schema, ``true`` and ``false`` are not numbers, ``1.0`` is an
integer, and a keyword applies only to values of its kind: ``minLength``
says nothing about a number.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["validate"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHOWN_CHARS = 40

_NUMBER_LIMITS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("minimum", "at least", operator.ge),
    ("maximum", "at most", operator.le),
    ("exclusiveMinimum", "more than", operator.gt),
    ("exclusiveMaximum", "less than", operator.lt),
)

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}


def validate(schema: Mapping[str, Any], value: object) -> list[str]:
    """Every way ``value`` breaks ``schema``, one readable line each; ``[]`` if none."""
    problems: list[str] = []
    _check(schema, value, "$", problems)
    return problems


def _check(schema: Mapping[str, Any], value: object, path: str, problems: list[str]) -> None:
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, name) for name in names):
            expected = " or ".join(_TYPE_NAMES.get(name, repr(name)) for name in names)
            problems.append(f"{path}: expected {expected}, got {_show(value)}")
            return  # the other keywords would only repeat the same mistake
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        options = ", ".join(_show(option) for option in schema["enum"])
        problems.append(f"{path}: expected one of {options}, got {_show(value)}")
    if isinstance(value, dict):
        _check_object(schema, value, path, problems)
    elif isinstance(value, list):
        _check_array(schema, value, path, problems)
    elif isinstance(value, str):
        _check_bounds(schema, "minLength", "maxLength", len(value), "character", path, problems)
    elif _is_type(value, "number"):
        _check_number(schema, value, path, problems)


def _check_object(
    schema: Mapping[str, Any], value: dict[Any, Any], path: str, problems: list[str]
) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            problems.append(f"{_child(path, name)}: required but missing")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            _check(properties[name], item, _child(path, name), problems)
        elif extra is False:
            problems.append(f"{_child(path, name)}: unexpected property")
        elif isinstance(extra, Mapping):
            _check(extra, item, _child(path, name), problems)


def _check_array(
    schema: Mapping[str, Any], value: list[Any], path: str, problems: list[str]
) -> None:
    _check_bounds(schema, "minItems", "maxItems", len(value), "item", path, problems)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            _check(items, item, f"{path}[{index}]", problems)


def _check_number(schema: Mapping[str, Any], value: Any, path: str, problems: list[str]) -> None:
    for keyword, words, within in _NUMBER_LIMITS:
        limit = schema.get(keyword)
        if limit is not None and not within(value, limit):
            problems.append(f"{path}: expected {words} {_show(limit)}, got {_show(value)}")


def _check_bounds(
    schema: Mapping[str, Any],
    low_keyword: str,
    high_keyword: str,
    count: int,
    unit: str,
    path: str,
    problems: list[str],
) -> None:
    low, high = schema.get(low_keyword), schema.get(high_keyword)
    if low is not None and count < low:
        problems.append(f"{path}: expected at least {_units(low, unit)}, got {count}")
    if high is not None and count > high:
        problems.append(f"{path}: expected at most {_units(high, unit)}, got {count}")


def _is_type(value: object, name: str) -> bool:
    # bool is a subclass of int in Python, but true and false are not numbers in JSON.
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name == "number":
        return True
    if name == "integer":
        return isinstance(value, int) or (math.isfinite(value) and value.is_integer())
    return False


def _json_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``1 == 1.0`` but ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, Sequence) and not isinstance(b, str):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    return a == b


def _child(path: str, name: object) -> str:
    if isinstance(name, str) and _IDENTIFIER.fullmatch(name):
        return f"{path}.{name}"
    return f"{path}[{json.dumps(str(name))}]"


def _show(value: object) -> str:
    """``value`` as the LLM wrote it (JSON), cut short if long."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _units(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
