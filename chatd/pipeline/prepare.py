"""Prepare: the prompt for a turn, trimmed to its token budget.

The prompt is the system prompt, the session's earlier turns and the new
message. Tokens are estimated (about four characters a token, plus a few for
each message's framing), which is close enough to keep a prompt within a
model's window without a tokenizer per model. When over budget, the oldest
turns go first; the system prompt and the new message always stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatd.llm.types import Message

__all__ = ["build_prompt", "estimate_tokens"]

_PER_MESSAGE = 4


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A tokenizer-free estimate of a prompt's size."""
    total = 0
    for message in messages:
        content = message.get("content")
        total += _PER_MESSAGE
        if isinstance(content, str):
            total += (len(content) + 3) // 4
    return total


def build_prompt(
    system_prompt: str, history: Sequence[Message], message: str, budget: int
) -> list[Message]:
    """System prompt, as much recent history as fits ``budget``, the message."""
    head: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail: list[Message] = [{"role": "user", "content": message}]
    room = budget - estimate_tokens(head) - estimate_tokens(tail)
    kept: list[Message] = []
    # Walk back from the newest turn; a turn starts at a user message, so a
    # trimmed history never begins with an orphaned assistant reply.
    turn: list[Message] = []
    for entry in reversed(history):
        turn.insert(0, entry)
        if entry.get("role") != "user":
            continue
        cost = estimate_tokens(turn)
        if cost > room:
            break
        room -= cost
        kept[:0] = turn
        turn = []
    return [*head, *kept, *tail]
