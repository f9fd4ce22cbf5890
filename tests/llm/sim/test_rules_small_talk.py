"""The simulator's built-in rules on small talk: greetings, thanks and
questions about the assistant answered in kind, and the greetings and fillers
around a question left out of what the FAQ is asked."""

from __future__ import annotations

import pytest

from chatd.llm.sim.rules import ToolCall, default_rules, plan_reply

from .conftest import body, calls, text_of

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
