"""What the end-to-end benchmarks ask chatd, each question asked once only.

Path B's and Path A's questions, the chit-chat the simulator answers directly, and the
prefixes and tags that make every question new to chatd, so no answer comes from its answer
cache or a shared flight; and the simulator's own floor for each (:func:`floor_ms`).
``bench_pipeline.py`` and the other scenarios' ``loadgen`` modules import them from here.
"""

from __future__ import annotations

import math

import orjson

from chatd.llm.sim.completions import ARGUMENT_PIECE_CHARS
from chatd.llm.sim.rules import ToolCallsPlan, default_rules, plan_reply

__all__ = [
    "CHIT_CHAT",
    "FILLERS",
    "OFFERED_TOOLS",
    "PATH_A",
    "PATH_B",
    "floor_ms",
    "unique_chit_chat",
    "unique_question",
]

PATH_B = ("tool_stream", "How do I reset my password?")
PATH_A = {
    "tools_calculator": "what is 12*(3+4)?",
    # As long as Path B's question, so the router streams as many argument pieces
    # for it: the two differ only in the FAQ's confidence (0.13, not 1.0).
    "tools_faq_unsure": "Do you repair old bicycles?",
}
# None of these is a question, an expression or about the clock: the
# simulator answers each directly, in 33 to 55 tokens.
CHIT_CHAT = (
    "tell me a story about the sea",
    "tell me a joke about cats",
    "say something nice about mornings",
    "describe a walk in the forest",
    "tell me about your favourite season",
    "write a short poem about rain",
    "share a thought about cooking dinner",
    "talk about the mountains in winter",
    "tell me a story about a lighthouse",
    "give me some encouragement for today",
)
# chatd replays finished answers from its answer cache and lets identical
# questions in flight share one LLM call, both keyed on the normalised text:
# every request here must be asked for the first time. A question gets a prefix
# of two of these two-letter words, all on the FAQ search's stop-word list, so
# it stays unique without changing its search terms or the path it takes. The
# prefix is six characters: Path B's tool-call arguments still fit the same six
# 8-character pieces as without it, so its router call is no longer.
FILLERS = ("am", "an", "as", "at", "be", "by", "do", "he", "hi", "if", "in", "is", "it",
           "me", "my", "no", "of", "oh", "ok", "on", "or", "so", "to", "us", "we")  # fmt: skip
CONSONANTS = "bcdfghjklmnpqrstvwxz"


def unique_question(n: int, question: str) -> str:
    """``question`` with the ``n``-th filler prefix (``n`` < 625)."""
    first, second = divmod(n, len(FILLERS))
    return f"{FILLERS[first % len(FILLERS)]} {FILLERS[second]} {question}"


def unique_chit_chat(n: int) -> str:
    """The ``n``-th chit-chat message: one of :data:`CHIT_CHAT` tagged with a
    word spelt from ``n`` in consonants (no digits for the calculator rule to
    read, no word the clock rule knows), so never a question and never cached."""
    base = CHIT_CHAT[n % len(CHIT_CHAT)]
    tag = ""
    while True:
        n, digit = divmod(n, len(CONSONANTS))
        tag += CONSONANTS[digit]
        if n == 0:
            break
    return f"{base}, ref {tag}"


OFFERED_TOOLS = ("frequently_asked", "calculator", "clock")
"""The tools the scenarios offer the router: chatd's built-in ones."""


def floor_ms(message: str, ttft_ms: float, tokens_per_s: float) -> tuple[str, float]:
    """The simulator's own floor for a message's first answer token.

    The router call's last tool-call unit is due at ``ttft + (units - 1) /
    rate``; Path B can answer then, Path A needs a second call and its TTFT.
    Returns (first tool, floor in ms for the path it should take).
    """
    tools = [{"type": "function", "function": {"name": n}} for n in OFFERED_TOOLS]
    plan = plan_reply({"messages": [{"role": "user", "content": message}], "tools": tools},
                      default_rules())  # fmt: skip
    if not isinstance(plan, ToolCallsPlan):
        raise RuntimeError(f"the simulator would not call a tool for {message!r}")
    units = sum(
        1 + math.ceil(len(orjson.dumps(call.arguments)) / ARGUMENT_PIECE_CHARS)
        for call in plan.calls
    )
    return plan.calls[0].name, ttft_ms + (units - 1) * 1000 / tokens_per_s
