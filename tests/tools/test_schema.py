"""Argument validation against the JSON-schema subset, as a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from chatd.tools.schema import validate

CALC = {
    "type": "object",
    "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 5}},
    "required": ["expression"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 3},
        "unit": {"enum": ["c", "f"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "note": {"type": ["string", "null"]},
        "flag": {"type": "boolean"},
    },
    "additionalProperties": {"type": "number"},
}

VALID: list[tuple[dict[str, Any], object]] = [
    (CALC, {"expression": "1+2"}),
    (WEATHER, {}),
    (WEATHER, {"city": "Paris", "days": 7, "unit": "f", "tags": ["a", "b"], "ratio": 0.5}),
    (WEATHER, {"days": 2.0}),  # 2.0 is an integer in JSON schema
    (WEATHER, {"note": None, "flag": False, "extra": 1.5}),
    ({}, "anything"),
    ({"type": "null"}, None),
    ({"enum": [1, [1, 2], {"a": True}]}, 1.0),
    ({"enum": [1, [1, 2], {"a": True}]}, [1, 2]),
    ({"enum": [1, [1, 2], {"a": True}]}, {"a": True}),
    ({"type": "object", "properties": {"a b": {"type": "string"}}}, {"a b": "x"}),
    ({"maxLength": 2}, 12345),  # a string keyword says nothing about a number
]

INVALID: list[tuple[dict[str, Any], object, list[str]]] = [
    (CALC, {"expression": 5}, ["$.expression: expected a string, got 5"]),
    (CALC, {}, ["$.expression: required but missing"]),
    (CALC, {"expression": ""}, ["$.expression: expected at least 1 character, got 0"]),
    (CALC, {"expression": "123456"}, ["$.expression: expected at most 5 characters, got 6"]),
    (CALC, {"expression": "1", "x": 1}, ["$.x: unexpected property"]),
    (CALC, [], ["$: expected an object, got []"]),
    (CALC, None, ["$: expected an object, got null"]),
    (WEATHER, {"days": True}, ["$.days: expected an integer, got true"]),
    (WEATHER, {"days": 2.5}, ["$.days: expected an integer, got 2.5"]),
    (WEATHER, {"days": 0}, ["$.days: expected at least 1, got 0"]),
    (WEATHER, {"days": 8}, ["$.days: expected at most 7, got 8"]),
    (WEATHER, {"unit": "k"}, ['$.unit: expected one of "c", "f", got "k"']),
    (WEATHER, {"tags": []}, ["$.tags: expected at least 1 item, got 0"]),
    (WEATHER, {"tags": ["a", "b", "c"]}, ["$.tags: expected at most 2 items, got 3"]),
    (WEATHER, {"tags": ["a", 3]}, ["$.tags[1]: expected a string, got 3"]),
    (WEATHER, {"ratio": 0}, ["$.ratio: expected more than 0, got 0"]),
    (WEATHER, {"ratio": 1}, ["$.ratio: expected less than 1, got 1"]),
    (WEATHER, {"ratio": "0.5"}, ['$.ratio: expected a number, got "0.5"']),
    (WEATHER, {"note": 1}, ["$.note: expected a string or null, got 1"]),
    (WEATHER, {"flag": 1}, ["$.flag: expected a boolean, got 1"]),
    (WEATHER, {"extra": "x"}, ['$.extra: expected a number, got "x"']),
    (WEATHER, {"extra": False}, ["$.extra: expected a number, got false"]),
    ({"enum": [1]}, True, ["$: expected one of 1, got true"]),
    (
        {"type": "object", "properties": {"a b": {"type": "string"}}},
        {"a b": 1},
        ['$["a b"]: expected a string, got 1'],
    ),
    (
        {"type": "integer"},
        "y" * 100,
        ['$: expected an integer, got "' + "y" * 38 + "…"],
    ),
    (
        {"type": "object", "required": ["a", "b"], "properties": {"c": {"type": "string"}}},
        {"c": 1},
        ["$.a: required but missing", "$.b: required but missing", "$.c: expected a string, got 1"],
    ),
    (
        {
            "type": "object",
            "properties": {
                "outer": {
                    "type": "object",
                    "properties": {"inner": {"type": "array", "items": {"type": "integer"}}},
                }
            },
        },
        {"outer": {"inner": [1, "two"]}},
        ['$.outer.inner[1]: expected an integer, got "two"'],
    ),
]


@pytest.mark.parametrize(("schema", "value"), VALID)
def test_valid_values_have_no_problems(schema: dict[str, Any], value: object) -> None:
    """A value that matches its schema yields no problems."""
    assert validate(schema, value) == []


@pytest.mark.parametrize(("schema", "value", "problems"), INVALID)
def test_invalid_values_are_explained_with_paths(
    schema: dict[str, Any], value: object, problems: list[str]
) -> None:
    """Each problem is one line naming the JSON path, what was expected and what came."""
    assert validate(schema, value) == problems
