"""The scenarios' message mixes and behaviours (benchmarks/loadgen/scenarios.py)."""

from __future__ import annotations

import collections
import random

import pytest
from loadgen.scenarios import KINDS, SCENARIOS, Behaviour, Scenario
from loadgen.users import RunState

from chatd.llm.sim.rules import TextPlan, ToolCallsPlan, default_rules, plan_reply

TOOLS = [{"type": "function", "function": {"name": n}} for n in ("frequently_asked", "calculator")]


def plan(message: str) -> object:
    return plan_reply({"messages": [{"role": "user", "content": message}], "tools": TOOLS},
                      default_rules())  # fmt: skip


def test_mix_draws_kinds_by_weight() -> None:
    """10,000 draws of the mix land within 2 points of each weight."""
    rng = random.Random(7)
    counts = collections.Counter(SCENARIOS["mix"].pick(rng).name for _ in range(10_000))
    for name, weight in SCENARIOS["mix"].weights.items():
        assert abs(counts[name] / 10_000 - weight) < 0.02


def test_single_kind_scenario_always_picks_it() -> None:
    rng = random.Random(1)
    assert {SCENARIOS["tools"].pick(rng).name for _ in range(100)} == {"tools"}


def test_abort_draws_cancel_and_drop_at_their_rates_within_the_delay_range() -> None:
    scenario = Scenario("x", "x", {"chitchat": 1}, Behaviour(cancel_p=0.3, drop_p=0.2))
    rng = random.Random(3)
    draws = [scenario.abort(rng) for _ in range(10_000)]
    actions = collections.Counter(d[0] if d else None for d in draws)
    assert abs(actions["cancel"] / 10_000 - 0.3) < 0.02
    assert abs(actions["drop"] / 10_000 - 0.2) < 0.02
    assert all(0.05 <= d[1] <= 1.0 for d in draws if d)


def test_no_abort_without_cancel_or_drop() -> None:
    rng = random.Random(3)
    assert all(SCENARIOS["mix"].abort(rng) is None for _ in range(1000))


@pytest.mark.parametrize("kind", ["faq", "tools", "chitchat"])
def test_messages_are_unique(kind: str) -> None:
    """The cache and shared flights must never answer: 3,000 messages, all distinct."""
    messages = [KINDS[kind].make(n) for n in range(3000)]
    assert len(set(messages)) == len(messages)


def test_storm_message_is_the_waves() -> None:
    """Every user asks the same in a wave, and each wave asks something new."""
    assert KINDS["storm"].make(4) == KINDS["storm"].make(4) != KINDS["storm"].make(5)


@pytest.mark.parametrize("n", [0, 1, 77, 2999])
def test_kinds_take_their_path_in_the_simulator(n: int) -> None:
    """FAQ calls frequently_asked, arithmetic the calculator, chit-chat is text."""
    faq, tools, chitchat = (plan(KINDS[k].make(n)) for k in ("faq", "tools", "chitchat"))
    assert isinstance(faq, ToolCallsPlan)
    assert [c.name for c in faq.calls] == ["frequently_asked"]
    assert isinstance(tools, ToolCallsPlan)
    assert [c.name for c in tools.calls] == ["calculator"]
    assert isinstance(chitchat, TextPlan)


def test_a_later_run_carries_on_the_numbering_of_unique_messages() -> None:
    """The soak's second phase must not ask what its first asked: ``message_offset``."""

    def asked(offset: int) -> list[str]:
        run = RunState("ws://x", SCENARIOS["chitchat"], 1, 1.0, 0.0, 0.0, message_offset=offset)
        return [run.next_message(KINDS["chitchat"]) for _ in range(3)]

    assert asked(3) == [KINDS["chitchat"].make(n) for n in (3, 4, 5)]
    assert not set(asked(0)) & set(asked(3))
