"""The ``calculator`` tool: arithmetic the LLM should not do in its head.

Nothing is ever ``eval``-ed. The expression is parsed with :func:`ast.parse`
and the tree is walked by hand, accepting only numbers, ``+ - * / // % **``,
unary ``+``/``-`` and parentheses; a name, a call, an attribute or anything
else is refused before any arithmetic happens. ``^`` is read as a power, as
people write it, and ``×``/``÷`` as their ASCII operators.

Arithmetic can still be a denial of service: ``2**10**10`` is a valid
expression whose value has three billion digits. So every intermediate value
is bounded (:data:`MAX_MAGNITUDE`), and a power is checked *before* it is
computed: its exponent is bounded (:data:`MAX_EXPONENT`) and the size of its
result is estimated from logarithms, so a refusal costs microseconds.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
import trio

from chatd.exceptions import ToolFailed
from chatd.tools.base import BuiltinTool, ToolContext, ToolResult, stream_text, string_argument

__all__ = [
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "MAX_MAGNITUDE",
    "Calculator",
    "calculate",
    "format_number",
]

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100
"""No value, intermediate or final, may be larger than this in absolute value."""

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_OPERATORS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}
_SPELLINGS = {"^": "**", "×": "*", "÷": "/", "−": "-"}
_ALLOWED = "numbers, + - * / // % ** (or ^) and parentheses"


def calculate(expression: str) -> Number:
    """The value of an arithmetic ``expression``; :class:`ToolFailed` says why there is none."""
    text = expression.strip()
    if not text:
        raise ToolFailed("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolFailed(
            f"the expression is too long ({len(text)} characters; "
            f"the limit is {MAX_EXPRESSION_CHARS})"
        )
    for spelling, python in _SPELLINGS.items():
        text = text.replace(spelling, python)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolFailed(f"{expression.strip()!r} is not an arithmetic expression") from exc
    try:
        return _evaluate(tree.body)
    except ZeroDivisionError as exc:
        raise ToolFailed("division by zero") from exc
    except OverflowError as exc:
        raise ToolFailed("the result is too large") from exc


def format_number(value: Number) -> str:
    """``84`` not ``84.0``; ``0.3`` not ``0.30000000000000004``; huge floats in e-notation."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def _evaluate(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolFailed(f"{value!r} is not a number; only {_ALLOWED} are allowed")
        return _bounded(value, "the number")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    raise ToolFailed(f"{_describe(node)} is not allowed; only {_ALLOWED} are")


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose result would be too large, before computing it."""
    if abs(exponent) > MAX_EXPONENT:
        raise ToolFailed(f"the exponent {format_number(exponent)} is too large")
    if base < 0 and not float(exponent).is_integer():
        raise ToolFailed("a negative number to a fractional power is not a real number")
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > 100:
        raise ToolFailed("the result is too large")


def _bounded(value: Number, what: str = "the result") -> Number:
    limit = float(MAX_MAGNITUDE) if isinstance(value, float) else MAX_MAGNITUDE
    if not abs(value) <= limit:  # also true for inf and nan
        raise ToolFailed(f"{what} is too large")
    return value


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Attribute):
        return f"the attribute {node.attr!r}"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"the operator {_OPERATORS.get(type(node.op), type(node.op).__name__)!r}"
    return f"{type(node).__name__}"


@attrs.frozen
class Calculator(BuiltinTool):
    """Evaluates arithmetic safely; the answer shows the expression and its value."""

    name: ClassVar[str] = "calculator"
    description: ClassVar[str] = (
        "Evaluate an arithmetic expression exactly. Supports numbers, + - * / // % "
        "** (or ^) and parentheses, e.g. '12*(3+4)' or '2^10 / 3'."
    )
    parameters: ClassVar[Mapping[str, Any]] = string_argument(
        "expression",
        "The arithmetic expression, e.g. '12*(3+4)'.",
        minLength=1,
        maxLength=MAX_EXPRESSION_CHARS,
    )
    timeout_s: float | None = None

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Compute ``arguments["expression"]``: content like ``12*(3+4) = 84``."""
        expression = str(arguments["expression"]).strip()
        value = calculate(expression)
        return ToolResult(content=f"{expression} = {format_number(value)}")

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        """Send the answer as text (the calculator never answers directly, but may)."""
        await stream_text(result.answer or result.content, send)
