"""The simulator's deterministic rules: tokens, built-in plans, rules files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.exceptions import ConfigError
from chatd.llm.sim.rules import (
    MAX_CALLS,
    Rules,
    TextPlan,
    ToolCall,
    ToolCallsPlan,
    default_rules,
    find_expression,
    plan_reply,
    tokenize,
)
from chatd.llm.sim.rules_file import load_rules

from .openai_wire import TOOLS, tool


def body(text: str, tools: list[dict[str, Any]] | None = TOOLS, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"messages": [{"role": "user", "content": text}], **extra}
    if tools is not None:
        request["tools"] = tools
    return request


def calls(text: str, rules: Rules | None = None, **extra: Any) -> list[ToolCall]:
    plan = plan_reply(body(text, **extra), rules or default_rules())
    assert isinstance(plan, ToolCallsPlan), plan
    return list(plan.calls)


def text_of(plan: object) -> str:
    assert isinstance(plan, TextPlan), plan
    return plan.text


def tool_results(*results: tuple[str, str]) -> list[dict[str, Any]]:
    """A round of tool calls as messages: the assistant calling each tool, then its result."""
    calls = [
        {"id": f"c{n}", "type": "function", "function": {"name": name}}
        for n, (name, _) in enumerate(results, start=1)
    ]
    return [
        {"role": "assistant", "content": None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": f"c{n}", "content": content}
            for n, (_, content) in enumerate(results, start=1)
        ),
    ]


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


# --- small talk, wrappers, several intents, follow-ups ----------------------------------

SMALL_TALK = [
    "hi",
    "hello!",
    "hey there",
    "thanks!",
    "thank you so much",
    "good morning!",
    "hi, how are you?",
    "who are you?",
    "what can you do?",
    "can you help me?",
    "ok",
    "bye",
]


def conversation(*turns: str, tools: list[dict[str, Any]] = TOOLS) -> dict[str, Any]:
    """A request whose messages alternate user and assistant, starting and ending with the user."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": turn} for i, turn in enumerate(turns)]
    return {"messages": [{"role": "system", "content": "You are..."}, *messages], "tools": tools}


@pytest.mark.parametrize("text", SMALL_TALK)
def test_small_talk_is_answered_directly_the_same_every_time(text: str) -> None:
    """Greetings, thanks and small talk get text, never a tool call, however they look."""
    reply = text_of(plan_reply(body(text), default_rules()))
    assert reply == text_of(plan_reply(body(text), default_rules()))
    assert 25 <= len(reply.split()) <= 60
    assert "You mentioned" not in reply  # not the generic chit-chat filler


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hi", ["Hi", "help"]),
        ("hey there", ["Hey", "help"]),
        ("good morning!", ["Good morning!", "help"]),
        ("hi, how are you?", ["Hi", "doing well", "help"]),
        ("thanks!", ["You're welcome"]),
        ("thank you so much", ["You're welcome"]),
        ("bye", ["Goodbye"]),
    ],
)
def test_small_talk_is_answered_in_kind(text: str, words: list[str]) -> None:
    """A greeting gets a greeting and an offer to help; thanks, you're welcome; bye, goodbye."""
    reply = text_of(plan_reply(body(text), default_rules()))
    for word in words:
        assert word in reply


@pytest.mark.parametrize("text", ["who are you?", "what can you do?", "can you help me?"])
def test_who_and_what_says_what_it_helps_with(text: str) -> None:
    """The assistant says it is the demo store's and lists what it can help with."""
    reply = text_of(plan_reply(body(text), default_rules()))
    assert "demo store's assistant" in reply
    for topic in ("orders", "shipping", "returns", "payments", "account", "arithmetic", "time"):
        assert topic in reply


def test_small_talk_with_no_tools_offered_is_the_same_reply() -> None:
    """The direct answer does not depend on the tools on offer."""
    offered = text_of(plan_reply(body("thanks!"), default_rules()))
    assert text_of(plan_reply(body("thanks!", tools=None), default_rules())) == offered


@pytest.mark.parametrize(
    ("text", "question"),
    [
        (
            "hi, quick question: how long does shipping take to Canada?",
            "how long does shipping take to Canada?",
        ),
        ("Hello! Where is my order?", "Where is my order?"),
        ("hey there, sorry to bother you, but where is my order?", "where is my order?"),
        ("ok so, how do I return an item?", "how do I return an item?"),
        ("how do I cancel my order? Thanks in advance!", "how do I cancel my order?"),
        ("where is my order please?", "where is my order?"),
    ],
)
def test_faq_gets_the_question_without_greetings_or_fillers(text: str, question: str) -> None:
    """Greetings and fillers before the question, and thanks after it, are not asked."""
    assert calls(text) == [ToolCall("frequently_asked", {"question": question})]


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order?",
        "  how do I reset my password ",
        "My order arrived damaged. What should I do?",
        "I ordered a lamp last week. where is it",
        "how are you able to ship so fast?",
        "how much is shipping and handling?",
    ],
)
def test_question_with_no_wrapper_is_passed_exactly(text: str) -> None:
    """With nothing to strip, frequently_asked gets the message itself (protocol.md §3)."""
    assert calls(text) == [ToolCall("frequently_asked", {"question": text})]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "what's 2+2 and how do I reset my password",
            [
                ToolCall("calculator", {"expression": "2+2"}),
                ToolCall("frequently_asked", {"question": "how do I reset my password"}),
            ],
        ),
        (
            "what time is it and where is my order?",
            [
                ToolCall("clock", {}),
                ToolCall("frequently_asked", {"question": "where is my order?"}),
            ],
        ),
        (
            "Where is my order? Also, what is 12*3?",
            [
                ToolCall("calculator", {"expression": "12*3"}),
                ToolCall("frequently_asked", {"question": "Where is my order?"}),
            ],
        ),
        (
            "hi, where is my order and what's 2+2",
            [
                ToolCall("calculator", {"expression": "2+2"}),
                ToolCall("frequently_asked", {"question": "where is my order"}),
            ],
        ),
        (
            "what is 2+2 and 3*3",
            [
                ToolCall("calculator", {"expression": "2+2"}),
                ToolCall("calculator", {"expression": "3*3"}),
            ],
        ),
    ],
)
def test_several_intents_call_several_tools_at_once(text: str, expected: list[ToolCall]) -> None:
    """Each request in the message gets its own call, calculator then clock then FAQ."""
    assert calls(text) == expected


@pytest.mark.parametrize(
    "text",
    ["how much is shipping and handling?", "what is 2 and 3?", "can I pay by card and PayPal?"],
)
def test_and_inside_one_request_does_not_split_it(text: str) -> None:
    """An "and" splits only between two requests: one intent is one call."""
    assert calls(text) == [ToolCall("frequently_asked", {"question": text})]


def test_the_same_call_is_never_made_twice() -> None:
    """Two requests that plan the same call make it once."""
    assert calls("what is 2+2? and what is 2+2?") == [ToolCall("calculator", {"expression": "2+2"})]
    assert calls("what time is it and what's the date?") == [ToolCall("clock", {})]


WORDS = [
    "hi",
    "thanks",
    "and",
    "also",
    "what",
    "about",
    "it",
    "is",
    "where",
    "my",
    "order",
    "time",
    "2+2",
    "?",
    ".",
    "!",
    ",",
    "please",
    "bye",
]


@given(
    st.lists(st.sampled_from([*WORDS, "quick question:", "\n"]) | st.text(max_size=5), max_size=30),
    st.lists(st.text(max_size=40), max_size=3),
)
def test_any_conversation_gets_one_plan_every_time(words: list[str], earlier: list[str]) -> None:
    """Whatever was said, planning never fails, gives the same plan twice and calls
    each tool at most once per set of arguments."""
    turns = [part for said in earlier for part in (said, "...")]
    request = conversation(*turns, " ".join(words))
    plan = plan_reply(request, default_rules())
    assert plan == plan_reply(request, default_rules())
    if isinstance(plan, ToolCallsPlan):
        assert 1 <= len(plan.calls) <= MAX_CALLS
        assert len(set(map(repr, plan.calls))) == len(plan.calls)


def test_a_message_of_many_questions_makes_a_few_calls() -> None:
    """Forty questions in one message make MAX_CALLS calls, the first ones asked."""
    text = " ".join(f"what is {n}*{n}?" for n in range(40))
    assert calls(text) == [
        ToolCall("calculator", {"expression": f"{n}*{n}"}) for n in range(MAX_CALLS)
    ]


def test_small_talk_beside_a_request_is_dropped() -> None:
    """Greetings beside a sum are not asked of any tool: only the calculator is called."""
    assert calls("Hi! How are you? What is 6*7?") == [ToolCall("calculator", {"expression": "6*7"})]


@pytest.mark.parametrize(
    ("earlier", "follow_up", "question"),
    [
        (
            "How do I return an item?",
            "and how long does that take?",
            "How do I return an item? and how long does that take?",
        ),
        (
            "How long does shipping take?",
            "what about for international orders?",
            "How long does shipping take? what about for international orders?",
        ),
        (
            "How long does shipping take?",
            "how much does it cost?",
            "How long does shipping take? how much does it cost?",
        ),
        (
            "hi, how do I return an item",
            "and if it's damaged?",
            "how do I return an item? and if it's damaged?",
        ),
    ],
)
def test_follow_up_carries_the_earlier_question(
    earlier: str, follow_up: str, question: str
) -> None:
    """A short question leaning on the last one asks the FAQ both, earlier first."""
    plan = plan_reply(conversation(earlier, "Here is what I found.", follow_up), default_rules())
    assert plan == ToolCallsPlan((ToolCall("frequently_asked", {"question": question}),))


def test_follow_up_looks_past_small_talk_and_earlier_follow_ups() -> None:
    """Thanks in between, or a follow-up before, still leave the last real question as topic."""
    turns = ["Where is my order?", "...", "thanks!", "...", "and when will it arrive?", "..."]
    plan = plan_reply(conversation(*turns, "and can I change it?"), default_rules())
    expected = ToolCall("frequently_asked", {"question": "Where is my order? and can I change it?"})
    assert plan == ToolCallsPlan((expected,))


@pytest.mark.parametrize(
    "turns",
    [
        ("and how long does that take?",),  # nothing earlier
        ("hi", "Hello!", "and how long does that take?"),  # nothing to lean on
        ("what is 2+2?", "4", "and how long does that take?"),  # moved on from the FAQ
    ],
)
def test_follow_up_without_an_earlier_question_stands_alone(turns: tuple[str, ...]) -> None:
    """With no earlier FAQ question to lean on, the follow-up is asked as it is."""
    plan = plan_reply(conversation(*turns), default_rules())
    assert plan == ToolCallsPlan((ToolCall("frequently_asked", {"question": turns[-1]}),))


def test_standalone_question_ignores_the_history() -> None:
    """A question that carries its own topic is not mixed with the last one."""
    plan = plan_reply(
        conversation("How do I return an item?", "...", "how do I reset my password?"),
        default_rules(),
    )
    question = "how do I reset my password?"
    assert plan == ToolCallsPlan((ToolCall("frequently_asked", {"question": question}),))


def test_follow_up_in_the_same_message_leans_on_the_question_before_it() -> None:
    """A follow-up after a question in the same message asks the FAQ with that question."""
    assert calls("How do I return an item? And how long does that take?") == [
        ToolCall("frequently_asked", {"question": "How do I return an item?"}),
        ToolCall(
            "frequently_asked",
            {"question": "How do I return an item? And how long does that take?"},
        ),
    ]


def test_two_tool_results_are_both_in_the_answer() -> None:
    """After a calculator and an FAQ result, the answer quotes both."""
    request = conversation("what's 2+2 and how do I reset my password")
    faq = '{"answer": "Use Forgot password.", "question": "How do I reset it?"}'
    request["messages"] += tool_results(("calculator", "2+2 = 4"), ("frequently_asked", faq))
    text = text_of(plan_reply(request, default_rules()))
    assert text == "2+2 = 4\nUse Forgot password."  # no tool names, no data


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            '{"answer": null, "candidates": [{"question": "Do you ship abroad?", "answer": "x"}]}',
            "I'm not sure I can answer that. Did you mean: Do you ship abroad?",
        ),
        ('{"answer": null, "candidates": []}', "I don't know the answer to that, sorry."),
        ('{"error": "division by zero"}', "Sorry, I couldn't do that: division by zero."),
        ('["a", "list"]', '["a", "list"]'),
    ],
)
def test_answers_from_tool_data_briefly(content: str, said: str) -> None:
    """Data without an answer: not sure (naming the closest entry), or does not
    know; a failed tool: could not, and why; anything else is quoted as it is."""
    request = conversation("what's your name?")
    request["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": content},
    ]
    assert text_of(plan_reply(request, default_rules())).startswith(said)


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
