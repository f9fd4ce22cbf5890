"""Scenarios: what the virtual users ask (kinds of message) and how they behave (pure).

A :class:`Kind` makes unique messages of one sort and names the path chatd should take for
them; a :class:`Scenario` is a weighted set of kinds, a :class:`Behaviour` and any chatd
settings it needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import attrs

from loadgen.pipeline_questions import FILLERS, unique_chit_chat

__all__ = ["KINDS", "SCENARIOS", "Behaviour", "Kind", "Outage", "Scenario"]

# Bundled FAQ entries its search answers with full confidence: the router streams the FAQ
# answer (Path B). The run checks the path taken.
FAQ_QUESTIONS = (
    "How do I reset my password?",
    "Where is my order?",
    "How do I cancel my order?",
    "How long does shipping take?",
    "What is your return policy?",
    "How do I get a refund?",
)


def unique_faq(n: int) -> str:
    """The ``n``-th FAQ question behind a two-word prefix of stop words (``FILLERS``): the
    cache and shared flights never answer it, the FAQ search sees the same terms. Unique for
    ``n`` below 625 × len(FAQ_QUESTIONS)."""
    question = FAQ_QUESTIONS[n % len(FAQ_QUESTIONS)]
    first, second = divmod((n // len(FAQ_QUESTIONS)) % 625, len(FILLERS))
    return f"{FILLERS[first]} {FILLERS[second]} {question}"


def unique_arithmetic(n: int) -> str:
    """The ``n``-th arithmetic question (Path A via ``calculator``), unique by its numbers."""
    a, b = divmod(n, 1000)
    return f"what is {a + 2}*({b}+7)?"


def storm_message(wave: int) -> str:
    """Storm wave ``wave``'s message: every user's in that wave, new each wave (no cache)."""
    return unique_chit_chat(5_000_000 + wave)


@attrs.frozen
class Kind:
    """One sort of message: how to make the ``n``-th, and what chatd should do with it;
    ``sim_calls`` LLM calls come one after the other before its first answer token."""

    name: str
    path: str
    sim_calls: int
    make: Callable[[int], str]


KINDS: Mapping[str, Kind] = {
    "faq": Kind("faq", "tool_stream", 1, unique_faq),
    "tools": Kind("tools", "tools", 2, unique_arithmetic),
    "chitchat": Kind("chitchat", "direct", 1, unique_chit_chat),
    "storm": Kind("storm", "direct", 1, storm_message),
}


@attrs.frozen
class Outage:
    """The simulator answers every call with ``status`` from ``start`` to ``end``
    (fractions of the run's duration)."""

    start: float = 0.3
    end: float = 0.6
    status: int = 503


@attrs.frozen
class Behaviour:
    """How users act beyond asking: a request is cancelled (``cancel_p``) or its connection
    dropped (``drop_p``) a uniform ``abort_after_s`` after it was sent; with ``wave_s`` every
    user sends the wave's message at multiples of it (a storm); an upstream ``outage``."""

    cancel_p: float = 0.0
    drop_p: float = 0.0
    abort_after_s: tuple[float, float] = (0.05, 1.0)
    wave_s: float | None = None
    outage: Outage | None = None


@attrs.frozen
class Scenario:
    """A named, weighted set of kinds, a behaviour, the chatd settings it needs, and the
    least it runs whatever the plan says (an outage needs time to recover)."""

    name: str
    description: str
    weights: Mapping[str, float]
    behaviour: Behaviour = Behaviour()
    chatd_env: Mapping[str, str] = attrs.field(factory=dict)
    min_duration_s: float = 0.0

    def pick(self, rng: random.Random) -> Kind:
        """A kind, drawn by weight."""
        names = list(self.weights)
        if len(names) == 1:
            return KINDS[names[0]]
        (name,) = rng.choices(names, weights=[self.weights[n] for n in names])
        return KINDS[name]

    def abort(self, rng: random.Random) -> tuple[str, float] | None:
        """Whether this request is cut short: (``"cancel"`` or ``"drop"``, delay s), or None."""
        b, draw = self.behaviour, rng.random()
        if draw >= b.cancel_p + b.drop_p:
            return None
        return "cancel" if draw < b.cancel_p else "drop", rng.uniform(*b.abort_after_s)


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("faq", "FAQ questions answered with confidence (Path B)", {"faq": 1}),
        Scenario("tools", "arithmetic through the calculator (Path A)", {"tools": 1}),
        Scenario("chitchat", "chit-chat answered directly", {"chitchat": 1}),
        Scenario(
            "storm",
            "every user asks the same question at the same instant, in waves",
            {"storm": 1},
            Behaviour(wave_s=2.5),
        ),
        Scenario(
            "cancels",
            "chit-chat; 30% cancelled and 20% dropped (TCP) after 0.05-1 s",
            {"chitchat": 1},
            Behaviour(cancel_p=0.3, drop_p=0.2),
        ),
        Scenario(
            "outage",
            "chit-chat; the LLM answers 503 from 30% to 60% of the run",
            {"chitchat": 1},
            Behaviour(outage=Outage()),
            # The default 30 s open timeout would outlast a short run: the breaker must
            # get the chance to probe and close again.
            {"CHATD_BREAKERS_LLM_OPEN_TIMEOUT_S": "1"},
            min_duration_s=8.0,
        ),
        Scenario(
            "mix",
            "50% FAQ, 20% arithmetic, 30% chit-chat",
            {"faq": 0.5, "tools": 0.2, "chitchat": 0.3},
        ),
    )
}
