"""The ``frequently_asked`` tool: answers from the FAQ knowledge base.

It is the one natural-answer tool: when the best FAQ entry's confidence
reaches ``min_confidence`` (``tools.faq_min_confidence``) its answer goes to
the client as is (Path B), with no second LLM call. Below that, the LLM gets
the closest entries as candidates (or none), and composes the answer itself
(Path A).

What the LLM reads is data (JSON), not prose to repeat: ``{"answer",
"question", "related"}`` for a confident match; ``{"answer": null,
"candidates", "note"}`` otherwise. No confidence figures: they are the
operators' (logs and traces), never words an LLM might pass on to a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import orjson
import trio

from chatd.exceptions import ToolFailed, UpstreamError, UpstreamUnavailable
from chatd.stores.kb import KnowledgeBase, Passage
from chatd.tools.base import BuiltinTool, ToolContext, ToolResult, stream_text, string_argument

__all__ = ["FrequentlyAsked", "describe_passages"]


def _entry(passage: Passage) -> dict[str, str]:
    return {"question": passage.question, "answer": passage.answer}


UNSURE_NOTE = (
    "No FAQ entry clearly answers the customer's question. Use a candidate only "
    "if it does; otherwise say briefly that you do not know."
)


def describe_passages(question: str, passages: Sequence[Passage], min_confidence: float) -> str:
    """The tool message the LLM reads (JSON): the confident answer with any
    other confident entries; or, when none is confident, the closest entries
    as candidates, with a note on how to use them."""
    best = passages[0] if passages else None
    if best is not None and best.confidence >= min_confidence:
        related = [_entry(p) for p in passages[1:] if p.confidence >= min_confidence]
        data: dict[str, Any] = {"answer": best.answer, "question": best.question}
        if related:
            data["related"] = related
    else:
        data = {"answer": None, "candidates": [_entry(p) for p in passages], "note": UNSURE_NOTE}
    return orjson.dumps(data).decode()


@attrs.frozen
class FrequentlyAsked(BuiltinTool):
    """Looks the user's question up in a :class:`~chatd.stores.kb.KnowledgeBase`."""

    name: ClassVar[str] = "frequently_asked"
    description: ClassVar[str] = (
        "Look up the store's FAQ: orders, shipping, returns, refunds, payments, "
        "accounts and passwords, privacy, subscriptions, support hours, warranty, "
        "gift cards and discounts. Pass the customer's question as they asked it."
    )
    parameters: ClassVar[Mapping[str, Any]] = string_argument(
        "question", "The customer's question, in their own words."
    )
    natural_answer: ClassVar[bool] = True

    kb: KnowledgeBase
    min_confidence: float = 0.75

    def speculative_arguments(self, message: str) -> dict[str, Any]:
        """The arguments to search with before the router has sent its own: the
        user's message, as the description asks the model to pass it."""
        return {"question": message}

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Search (three passages); a confident best passage's answer is the answer."""
        question = str(arguments["question"])
        try:
            passages = await self.kb.search(question, limit=3)
        except (UpstreamUnavailable, UpstreamError) as exc:
            raise ToolFailed(
                "the FAQ is not available right now", detail=exc.detail or exc.message
            ) from exc
        content = describe_passages(question, passages, self.min_confidence)
        if passages and passages[0].confidence >= self.min_confidence:
            return ToolResult(content=content, answer=passages[0].answer)
        return ToolResult(content=content)

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        """Send the confident answer (or, failing that, the content) in pieces."""
        await stream_text(result.answer or result.content, send)
