"""frequently_asked: a confident FAQ answer goes straight out; otherwise the LLM decides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import orjson
import pytest
import trio

from chatd.config import KBSettings
from chatd.exceptions import ToolFailed, UpstreamUnavailable
from chatd.stores.kb import FAQEntry, KBStatistics, KnowledgeBase, Passage, open_knowledge_base
from chatd.tools import Tool, ToolContext
from chatd.tools.faq import FrequentlyAsked

CONTEXT = ToolContext(request_id="req-1")
TIMEOUT = 20

RESET = Passage(
    question="How do I reset my password?",
    answer=(
        'Click "Forgot password?" on the sign-in page and enter your email address; '
        "we'll send you a link to choose a new password, valid for one hour."
    ),
    tags=("password",),
    score=9.6,
    confidence=0.9,
)
CHANGE = Passage(
    question="How do I change my password?",
    answer="Sign in and go to Account > Settings > Security.",
    tags=("password",),
    score=7.5,
    confidence=0.3,
)


@attrs.define
class CannedKB:
    """Answers every search with the same passages, or fails."""

    passages: list[Passage]
    error: Exception | None = None
    queries: list[tuple[str, int]] = attrs.field(factory=list)

    async def search(self, query: str, limit: int = 3) -> list[Passage]:
        self.queries.append((query, limit))
        if self.error is not None:
            raise self.error
        return self.passages[:limit]

    async def add(self, entries: Sequence[FAQEntry]) -> int:
        raise NotImplementedError

    async def count(self) -> int:
        return len(self.passages)

    def statistics(self) -> KBStatistics:
        raise NotImplementedError


@pytest.fixture
async def sample_kb(tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    """The real SQLite knowledge base with the sample FAQ."""
    async with open_knowledge_base(KBSettings(path=str(tmp_path / "kb.sqlite3"))) as kb:
        yield kb


def test_is_a_natural_answer_tool() -> None:
    """Name, schema and flags are what the pipeline and the LLM expect."""
    tool = FrequentlyAsked(CannedKB([]), min_confidence=0.5)
    assert isinstance(tool, Tool)
    assert tool.name == "frequently_asked"
    question = tool.parameters["properties"]["question"]
    assert tool.parameters == {
        "type": "object",
        "properties": {"question": {"type": "string", "description": question["description"]}},
        "required": ["question"],
        "additionalProperties": False,
    }
    assert question["description"]
    assert (tool.natural_answer, tool.time_bound, tool.user_bound) == (True, False, False)
    assert tool.timeout_s is None
    assert tool.description


async def test_confident_best_passage_is_the_answer() -> None:
    """At or above min_confidence the best passage's answer is set; content has it too."""
    kb = CannedKB([RESET, CHANGE])
    tool = FrequentlyAsked(kb, min_confidence=0.9)
    result = await tool.execute({"question": "reset my password?"}, CONTEXT)
    assert result.answer == RESET.answer
    data = orjson.loads(result.content)
    assert data == {"answer": RESET.answer, "question": RESET.question}  # CHANGE: not confident
    assert kb.queries == [("reset my password?", 3)]


async def test_not_confident_gives_the_llm_the_closest_entries() -> None:
    """Below min_confidence there is no answer; content lists the entries as uncertain."""
    tool = FrequentlyAsked(CannedKB([CHANGE, RESET]), min_confidence=0.5)
    result = await tool.execute({"question": "password stuff"}, CONTEXT)
    assert result.answer is None
    data = orjson.loads(result.content)
    assert data["answer"] is None and "do not know" in data["note"]
    assert [c["answer"] for c in data["candidates"]] == [CHANGE.answer, RESET.answer]
    assert "confidence" not in result.content  # operators' figures, not the LLM's words


async def test_nothing_found_says_so() -> None:
    """With no passages the content says plainly that no FAQ entry matched."""
    result = await FrequentlyAsked(CannedKB([])).execute({"question": "tell me a joke"}, CONTEXT)
    assert result.answer is None
    assert orjson.loads(result.content)["candidates"] == []


async def test_knowledge_base_failure_is_a_tool_failure() -> None:
    """An unavailable knowledge base is reported in words (ToolFailed), not as a
    bug; why it is unavailable is the operators' (detail), not the user's."""
    tool = FrequentlyAsked(CannedKB([], error=UpstreamUnavailable("kb: database is locked")))
    with pytest.raises(ToolFailed) as failed:
        await tool.execute({"question": "where is my order?"}, CONTEXT)
    assert failed.value.message == "the FAQ is not available right now"  # what users may read
    assert failed.value.detail is not None and "database is locked" in failed.value.detail


async def test_stream_sends_the_whole_answer_in_pieces() -> None:
    """stream() sends the answer in several pieces that join back to it exactly."""
    tool = FrequentlyAsked(CannedKB([RESET]))
    result = await tool.execute({"question": "reset password"}, CONTEXT)
    send, receive = trio.open_memory_channel[str](100)
    with trio.fail_after(TIMEOUT):
        async with send:
            await tool.stream(result, send)
        pieces = [piece async for piece in receive]
    assert len(pieces) > 1
    assert "".join(pieces) == RESET.answer


@pytest.mark.parametrize(
    ("question", "answer_starts"),
    [
        ("how do I reset my password?", 'Click "Forgot password?"'),
        ("where is my order?", "You can follow your order"),
        ("can I return shoes I wore once?", "Items must be unworn"),
    ],
)
async def test_sample_faq_answers_real_questions(
    sample_kb: KnowledgeBase, question: str, answer_starts: str
) -> None:
    """With the shipped FAQ and the default bar, common questions get a direct answer."""
    with trio.fail_after(TIMEOUT):
        result = await FrequentlyAsked(sample_kb, 0.5).execute({"question": question}, CONTEXT)
    assert result.answer is not None
    assert result.answer.startswith(answer_starts)


async def test_sample_faq_does_not_answer_off_topic(sample_kb: KnowledgeBase) -> None:
    """An off-topic question leaves the answer to the LLM."""
    with trio.fail_after(TIMEOUT):
        result = await FrequentlyAsked(sample_kb, 0.5).execute(
            {"question": "who won the 1998 world cup?"}, CONTEXT
        )
    assert result.answer is None
    assert result.content
