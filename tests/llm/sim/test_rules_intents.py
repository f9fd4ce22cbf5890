"""The simulator's built-in rules on messages that ask several things and
conversations that lean on earlier turns: several intents in one message,
follow-ups that carry the earlier question, and answers from tool data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.llm.sim.rules import MAX_CALLS, ToolCall, ToolCallsPlan, default_rules, plan_reply

from .conftest import calls, text_of, tool_results
from .openai_wire import TOOLS


def conversation(*turns: str, tools: list[dict[str, Any]] = TOOLS) -> dict[str, Any]:
    """A request whose messages alternate user and assistant, starting and ending with the user."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": turn} for i, turn in enumerate(turns)]
    return {"messages": [{"role": "system", "content": "You are..."}, *messages], "tools": tools}


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
