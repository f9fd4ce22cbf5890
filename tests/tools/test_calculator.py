"""The calculator: safe arithmetic, clear refusals, no eval."""

from __future__ import annotations

import pytest
import trio

from chatd.exceptions import ToolFailed
from chatd.llm.types import ToolCall
from chatd.tools import Calculator, Tool, ToolContext, ToolRegistry, calculate

CONTEXT = ToolContext(request_id="req-1")


@pytest.mark.parametrize(
    ("expression", "content"),
    [
        ("12*(3+4)", "12*(3+4) = 84"),
        ("2+3*4", "2+3*4 = 14"),
        ("(2+3)*4", "(2+3)*4 = 20"),
        ("2 ^ 10", "2 ^ 10 = 1024"),
        ("2**3**2", "2**3**2 = 512"),
        ("-2**2", "-2**2 = -4"),
        ("(-2)**2", "(-2)**2 = 4"),
        ("-3 + +5", "-3 + +5 = 2"),
        ("--4", "--4 = 4"),
        ("10/4", "10/4 = 2.5"),
        ("10/2", "10/2 = 5"),
        ("7//2", "7//2 = 3"),
        ("-7//2", "-7//2 = -4"),
        ("7 % 3", "7 % 3 = 1"),
        ("0.1 + 0.2", "0.1 + 0.2 = 0.3"),
        ("1/3", "1/3 = 0.333333333333"),
        ("2**0.5", "2**0.5 = 1.41421356237"),
        ("2**-2", "2**-2 = 0.25"),
        ("1.5e3 * 2", "1.5e3 * 2 = 3000"),
        ("6 × 7 ÷ 2", "6 × 7 ÷ 2 = 21"),
        ("10**20", "10**20 = 100000000000000000000"),
        ("1e20 / 1", "1e20 / 1 = 1e+20"),
        ("  42  ", "42 = 42"),
        ("-0.0", "-0.0 = 0"),
    ],
)
async def test_expressions(expression: str, content: str) -> None:
    """Precedence, unary signs, ^ as power, floats shown sensibly, integers without .0."""
    result = await Calculator().execute({"expression": expression}, CONTEXT)
    assert result.content == content and result.answer is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("5 // 0.0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("__import__('os')", "a function call is not allowed"),
        ("__import__('os').system('true')", "a function call is not allowed"),
        ("__import__('os').sep", "the attribute 'sep' is not allowed"),
        ("abs(-1)", "a function call is not allowed"),
        ("x + 1", "the name 'x' is not allowed"),
        ("pi", "the name 'pi' is not allowed"),
        ("(1).real", "the attribute 'real' is not allowed"),
        ("'a' * 3", "'a' is not a number"),
        ("True + 1", "True is not a number"),
        ("1j * 2", "1j is not a number"),
        ("1 << 3", "the operator '<<' is not allowed"),
        ("~1", "the operator '~' is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("[1, 2]", "List is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("2 +", "'2 +' is not an arithmetic expression"),
        ("1; 2", "is not an arithmetic expression"),
        ("", "the expression is empty"),
        ("2**10**10", "the exponent 10000000000 is too large"),
        ("10**200", "the result is too large"),
        ("9**9**9", "the exponent 387420489 is too large"),
        ("1.5**1000", "the result is too large"),
        ("1e100 * 1e100", "the result is too large"),
        ("1e300", "the number is too large"),
        ("10**100 * 10", "the result is too large"),
        ("9" * 101, "the number is too large"),
        ("(-8) ** (1/3)", "a negative number to a fractional power is not a real number"),
        ("1+" * 100 + "1", "the expression is too long (201 characters; the limit is 200)"),
    ],
)
async def test_refusals_are_tool_failures(expression: str, message: str) -> None:
    """Division by zero, names, calls, attributes, bad syntax and huge numbers say why."""
    with pytest.raises(ToolFailed) as caught:
        await Calculator().execute({"expression": expression}, CONTEXT)
    assert message in caught.value.message


async def test_huge_powers_are_refused_before_being_computed() -> None:
    """2**10**10 has three billion digits; it is refused without trying (a hang fails here)."""
    with trio.fail_after(5):
        for expression in ["2**10**10", "9**9**9**9", "(10**99)**1000", "2**2**2**2**2**2"]:
            with pytest.raises(ToolFailed, match="too large"):
                await trio.to_thread.run_sync(calculate, expression, abandon_on_cancel=True)


async def test_long_input_is_refused_by_the_schema_through_the_registry() -> None:
    """Through the registry, the schema's maxLength refuses an overlong expression first."""
    registry = ToolRegistry([Calculator()])
    outcome = await registry.run(
        ToolCall(id="c", name="calculator", arguments='{"expression": "' + "1+" * 150 + '1"}'),
        CONTEXT,
    )
    assert outcome.error == "bad arguments: $.expression: expected at most 200 characters, got 301"


async def test_through_the_registry() -> None:
    """The LLM's raw JSON call becomes an ok outcome with the answer as content."""
    registry = ToolRegistry([Calculator()])
    outcome = await registry.run(
        ToolCall(id="c", name="calculator", arguments='{"expression": "2^8"}'), CONTEXT
    )
    assert outcome.ok and outcome.content == "2^8 = 256"


def test_calculator_is_a_tool_that_may_be_cached() -> None:
    """It implements the Tool protocol; its answers depend on nothing but the input."""
    calculator = Calculator()
    assert isinstance(calculator, Tool)
    assert calculator.name == "calculator"
    assert calculator.parameters["required"] == ["expression"]
    assert not (calculator.natural_answer or calculator.time_bound or calculator.user_bound)
    assert calculator.timeout_s is None and Calculator(timeout_s=1).timeout_s == 1
