"""The simulator's deterministic rules: tokens, the built-in plans for one plain
message and the request's tool choice, rules files.

Small talk and questions wrapped in it are in test_rules_small_talk.py; several
intents, follow-ups and answers from tool data in test_rules_intents.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.exceptions import ConfigError
from chatd.llm.sim.rules import (
    TextPlan,
    ToolCall,
    default_rules,
    find_expression,
    plan_reply,
    tokenize,
)
from chatd.llm.sim.rules_file import load_rules

from .conftest import body, calls, text_of, tool_results
from .openai_wire import TOOLS, tool

# --- tokens ---------------------------------------------------------------------------


@given(st.text())
def test_tokens_join_back_into_the_text(text: str) -> None:
    """Whatever the text, its tokens concatenate to it exactly."""
    assert "".join(tokenize(text)) == text


def test_tokens_are_words_with_leading_whitespace() -> None:
    """Words carry the whitespace before them; punctuation is its own token."""
    assert tokenize("Hello,  big world!\n") == ["Hello", ",", "  big", " world", "!", "\n"]


# --- built-in rules -------------------------------------------------------------------


def test_arithmetic_calls_calculator_with_the_expression() -> None:
    """An expression in the message becomes calculator's argument, as written."""
    assert calls("what is 12*(3+4)?") == [ToolCall("calculator", {"expression": "12*(3+4)"})]


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("2 + 2", "2 + 2"),
        ("compute (1.5 * 4) / 3 please.", "(1.5 * 4) / 3"),
        ("(what is 7%3)", "7%3"),
        ("is 2^10 big", "2^10"),
        ("-3 + 4 = ?", "-3 + 4"),
        ("I was born on 2024-01-15", None),
        ("version 1.2.3 is out", None),
        ("I have 3 cats", None),
    ],
)
def test_find_expression(text: str, expression: str | None) -> None:
    """Expressions need two numbers and an operator; dates and versions are not sums."""
    assert find_expression(text) == expression


@pytest.mark.parametrize(
    "text", ["What time is it?", "tell me today's date", "which day is it", "check the clock"]
)
def test_time_question_calls_clock(text: str) -> None:
    """A question about the current time or date calls clock with no arguments."""
    assert calls(text) == [ToolCall("clock", {})]


@pytest.mark.parametrize("text", ["hello there, how are you today", "no time to lose"])
def test_time_words_in_small_talk_do_not_call_clock(text: str) -> None:
    """Mentioning today or time is not asking for it: small talk is answered in text."""
    assert isinstance(plan_reply(body(text), default_rules()), TextPlan)


def test_arithmetic_and_time_call_both_calculator_first() -> None:
    """Both in one message call both tools: calculator at index 0, clock at 1."""
    assert calls("what is 6*7 and what day is it?") == [
        ToolCall("calculator", {"expression": "6*7"}),
        ToolCall("clock", {}),
    ]


@pytest.mark.parametrize("text", ["Where is my order?", "how do I reset my password"])
def test_other_questions_call_frequently_asked(text: str) -> None:
    """A question that is neither sums nor time goes to the FAQ, message verbatim."""
    assert calls(text) == [ToolCall("frequently_asked", {"question": text})]


def test_chit_chat_is_a_deterministic_friendly_text() -> None:
    """A statement is answered in text of 25-60 words, the same text every time."""
    first = text_of(plan_reply(body("I love sunny mornings"), default_rules()))
    again = text_of(plan_reply(body("I love sunny mornings"), default_rules()))
    other = text_of(plan_reply(body("Tell me a story"), default_rules()))
    assert first == again
    assert first != other
    assert 25 <= len(first.split()) <= 60


def test_tool_choice_none_answers_in_text() -> None:
    """tool_choice "none" forbids tools even for arithmetic."""
    assert isinstance(plan_reply(body("2+2?", tool_choice="none"), default_rules()), TextPlan)


def test_no_tools_offered_answers_in_text() -> None:
    """Without tools in the request there is nothing to call."""
    assert isinstance(plan_reply(body("what is 2+2?", tools=None), default_rules()), TextPlan)


def test_only_offered_tools_are_called() -> None:
    """Arithmetic without a calculator on offer falls back to the FAQ for a question."""
    offered = [tool("clock"), tool("frequently_asked")]
    assert calls("what is 2+2?", tools=offered) == [
        ToolCall("frequently_asked", {"question": "what is 2+2?"})
    ]


def test_named_tool_choice_calls_that_function() -> None:
    """A named tool_choice is called whatever the message says."""
    choice = {"type": "function", "function": {"name": "clock"}}
    assert calls("hello", tool_choice=choice) == [ToolCall("clock", {})]


def test_required_tool_choice_always_calls() -> None:
    """tool_choice "required" turns chit-chat into a FAQ call."""
    assert calls("hello", tool_choice="required") == [
        ToolCall("frequently_asked", {"question": "hello"})
    ]


def test_tool_results_are_quoted_verbatim() -> None:
    """After tool results the answer quotes each (no tool names), and calls nothing."""
    request = body("what is 6*7 and the time?")
    request["messages"] += tool_results(
        ("calculator", "6*7 = 42"), ("clock", '{"now": "12:00"}  odd  spacing')
    )
    text = text_of(plan_reply(request, default_rules()))
    assert text == '6*7 = 42\n{"now": "12:00"}  odd  spacing'


# --- rules files ----------------------------------------------------------------------

TOML_RULES = r"""
[[rules]]
pattern = '^weather in (?P<city>\w+)'
tool_calls = [{ name = "weather", arguments = { city = '\g<city>', units = "metric" } }]

[[rules]]
pattern = 'my name is (\w+)'
reply = 'Nice to meet you, \1!'
"""


def test_rules_file_reply_uses_match_groups(tmp_path: Path) -> None:
    """A reply rule expands numbered groups of its pattern."""
    path = tmp_path / "rules.toml"
    path.write_text(TOML_RULES)
    plan = plan_reply(body("Hi, MY NAME IS Ada."), load_rules(path))
    assert plan == TextPlan("Nice to meet you, Ada!")


def test_rules_file_tool_arguments_use_match_groups(tmp_path: Path) -> None:
    """String arguments of a tool-call rule expand named groups; others stay as given."""
    path = tmp_path / "rules.toml"
    path.write_text(TOML_RULES)
    rules = load_rules(path)
    offered = [*TOOLS, tool("weather")]
    assert calls("Weather in Paris", rules, tools=offered) == [
        ToolCall("weather", {"city": "Paris", "units": "metric"})
    ]


def test_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    """With a rules file, arithmetic no longer calls calculator; no match is chit-chat."""
    path = tmp_path / "rules.json"
    path.write_text('[{"pattern": "ping", "reply": "pong"}]')
    rules = load_rules(path)
    assert plan_reply(body("ping?"), rules) == TextPlan("pong")
    assert isinstance(plan_reply(body("what is 2+2?"), rules), TextPlan)


def test_rules_file_skips_tool_rules_whose_tools_are_not_offered(tmp_path: Path) -> None:
    """A tool-call rule applies only when the request offers its tools."""
    path = tmp_path / "rules.toml"
    path.write_text(TOML_RULES)
    assert isinstance(plan_reply(body("weather in Rome"), load_rules(path)), TextPlan)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("r.toml", "[[rules]]\npattern = '('\nreply = 'x'\n", "not a valid regular expression"),
        ("r.toml", "[[rules]]\npattern = 'a'\n", "exactly one of reply or tool_calls"),
        ("r.toml", "[[rules]]\npattern = '(a)'\nreply = '\\2'\n", "bad group reference"),
        ("r.toml", "[[rules]\n", "not valid TOML"),
        ("r.json", '{"rules": 3}', 'expected a list under "rules"'),
        ("r.json", '[{"pattern": "a", "reply": "b", "colour": 1}]', "unknown key 'colour'"),
        ("r.json", '[{"pattern": "a", "tool_calls": [{"arguments": {}}]}]', "needs a name"),
        ("r.yaml", "rules: []", "expected a .toml or .json file"),
    ],
)
def test_bad_rules_file_is_a_one_line_config_error(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    """Every problem with a rules file names the file and the problem on one line."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    """A rules file that cannot be read is a config error, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")
