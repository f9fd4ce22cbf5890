"""Prompt building: system prompt, recent history within budget, the new message."""

from __future__ import annotations

from chatd.llm.types import Message
from chatd.pipeline.prepare import build_prompt, estimate_tokens


def turn(n: int, size: int = 40) -> list[Message]:
    return [
        {"role": "user", "content": f"question {n} " + "x" * size},
        {"role": "assistant", "content": f"answer {n} " + "y" * size},
    ]


def test_everything_fits() -> None:
    """Under budget, the whole history is kept in order."""
    history = turn(1) + turn(2)
    prompt = build_prompt("be nice", history, "now?", budget=10_000)
    assert prompt == [
        {"role": "system", "content": "be nice"},
        *history,
        {"role": "user", "content": "now?"},
    ]


def test_oldest_turns_go_first() -> None:
    """Over budget, whole turns are dropped from the oldest, never the new message."""
    history = turn(1) + turn(2) + turn(3)
    one_turn = estimate_tokens(turn(3))
    fixed = estimate_tokens([{"role": "system", "content": "s"}, {"role": "user", "content": "m"}])
    prompt = build_prompt("s", history, "m", budget=fixed + one_turn + 1)
    assert prompt[1:-1] == turn(3)
    assert prompt[-1] == {"role": "user", "content": "m"}


def test_no_room_keeps_system_and_message() -> None:
    """With no room at all, only the system prompt and the message remain."""
    prompt = build_prompt("s", turn(1), "m", budget=1)
    assert [m["role"] for m in prompt] == ["system", "user"]


def test_estimate() -> None:
    """About four characters a token plus a little per message."""
    assert estimate_tokens([{"role": "user", "content": "x" * 40}]) == 14
    assert estimate_tokens([{"role": "assistant", "content": None}]) == 4
