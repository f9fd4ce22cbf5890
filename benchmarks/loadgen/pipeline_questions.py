"""What the end-to-end benchmarks ask chatd, each question asked once only.

Path B's and Path A's questions, the chit-chat the simulator answers directly, and the
prefixes and tags that make every question new to chatd, so no answer comes from its answer
cache or a shared flight. ``bench_pipeline.py`` keeps these importable for the other scenarios.
"""

from __future__ import annotations

__all__ = [
    "CHIT_CHAT",
    "FILLERS",
    "PATH_A",
    "PATH_B",
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
