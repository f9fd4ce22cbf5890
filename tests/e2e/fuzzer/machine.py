"""The state machine: :class:`ProtocolFuzz`, one example's connections and
requests doing random things, and :func:`run_machine`, one hypothesis run of
it from a worker thread."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import hypothesis.statistics
import orjson
import trio
from hypothesis import HealthCheck, Phase, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    rule,
    run_state_machine_as_test,
)

from .client import FuzzSocket
from .harness import Harness
from .replies import Frame, HTTPCase, frame
from .strategies import bad_bursts, bursts, chat_bursts, chat_objects, floods, http_cases

STEPS = 5
"""Steps per example (hypothesis runs the full count unless shrinking)."""


which = st.integers(0, 2)
"""A connection of the example's: the n-th open one, modulo how many are."""


class ProtocolFuzz(RuleBasedStateMachine):
    """One example: a few connections and HTTP requests doing random things.

    Rules draw their data here, in hypothesis's thread, and do their work in
    trio's (:meth:`Harness.call`), where the sockets live. Connections are
    named by number, not kept in a bundle, so every rule can always run
    (hypothesis otherwise rejects many examples whose bundle ran dry).
    """

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        spare = harness.call(harness.begin_example)
        self.sockets: list[FuzzSocket] = [spare] if spare is not None else []

    def _open(self) -> list[FuzzSocket]:
        return [sock for sock in self.sockets if sock.ended == "open"]

    def _connect(self) -> FuzzSocket:
        h = self.harness
        sock = h.call(FuzzSocket.connect, h.port, h.nursery)
        self.sockets.append(sock)
        h.counts["connections"] += 1
        return sock

    def _conn(self, index: int) -> FuzzSocket:
        """Open connection ``index`` (modulo); a new one if none is open."""
        live = self._open()
        return live[index % len(live)] if live else self._connect()

    @rule()
    def connect(self) -> None:
        """Another connection, up to three at once."""
        if len(self._open()) < 3:
            self._connect()

    def _send(self, index: int, frames: list[Frame]) -> None:
        self.harness.call(_send_and_check, self._conn(index), frames)
        self.harness.counts["frames"] += len(frames)
        for one in frames:
            self.harness.counts[f"frame_{one.label}"] += 1

    @rule(index=which, frames=chat_bursts)
    def send_chats(self, index: int, frames: list[Frame]) -> None:
        """Chats, cancels and pings in one write."""
        self._send(index, frames)

    @rule(index=which, frames=bursts)
    def send_any(self, index: int, frames: list[Frame]) -> None:
        """Frames of every kind in one write."""
        self._send(index, frames)

    @rule(index=which, frames=st.one_of(bad_bursts, floods))
    def send_bad(self, index: int, frames: list[Frame]) -> None:
        """Malformed frames in one write, or one of them many times over."""
        self._send(index, frames)

    @rule(index=which, pick=st.integers(0, 255), chat=st.none() | chat_objects("?"))
    def reuse_an_id_in_flight(self, index: int, pick: int, chat: dict[str, Any] | None) -> None:
        """Cancel (``chat`` None), or chat again under, an id whose answer
        has not ended yet: the ``pick``-th of them, modulo."""
        conn = self._conn(index)
        pending = self.harness.call(_outstanding, conn)
        if not pending:
            return
        request_id = pending[pick % len(pending)]
        fields = {**chat, "id": request_id} if chat else {"type": "cancel", "id": request_id}
        one = frame(orjson.dumps(fields).decode(), "chat" if chat else "cancel")
        self.harness.call(_send_and_check, conn, [one])
        self.harness.counts["duplicates" if chat else "cancels_in_flight"] += 1

    @rule(index=which)
    def settle(self, index: int) -> None:
        """Wait for every reply owed so far (its ids may then start again)."""
        self.harness.call(self._conn(index).settle)

    @rule(index=which, how=st.sampled_from(["close", "fin", "reset", "mid_frame"]))
    def leave(self, index: int, how: str) -> None:
        """Close properly without waiting for the answers (every reply that is
        not a chat's still comes first), or go without a word: a FIN, a
        reset, half a frame then a FIN."""
        if how == "close":
            self.harness.call(_close_and_check, self._conn(index))
        else:
            self.harness.call(self._conn(index).drop, how)
        self.harness.counts[f"left_{how}"] += 1

    @rule(ms=st.sampled_from([0, 1, 2]))
    def pause(self, ms: int) -> None:
        """Let answers move on, so the next step lands at another moment."""
        self.harness.call(trio.sleep, ms / 1000)

    @rule(case=st.one_of(http_cases, http_cases, st.sampled_from(["mid_body", "mid_answer"])))
    def http(self, case: HTTPCase | str) -> None:
        """A ``POST /v1/chat``, or a client that goes mid-way through one."""
        if isinstance(case, str):
            self.harness.call(self.harness.abandon, case)
            self.harness.counts[f"http_abandoned_{case}"] += 1
        else:
            self.harness.call(self.harness.post, case)
            self.harness.counts["http"] += 1

    def teardown(self) -> None:
        note(f"fuzz seed {self.harness.seed}")
        self.harness.call(self.harness.finish_example, self.sockets)


async def _send_and_check(sock: FuzzSocket, frames: Sequence[Frame]) -> None:
    await sock.send(frames)
    sock.check(owed="some")


async def _outstanding(sock: FuzzSocket) -> list[str]:
    await trio.lowlevel.checkpoint()
    return sock.outstanding() if sock.ended == "open" else []


async def _close_and_check(sock: FuzzSocket) -> None:
    await sock.close()
    sock.check(owed="replies")


def run_machine(harness: Harness, examples: int, run_seed: int) -> collections.Counter[str]:
    """Run ``examples`` examples (blocking: call from a worker thread); how
    many test cases hypothesis ran, by status (``valid`` ones count towards
    ``examples``; ``overrun`` ones outgrew its buffer mid-way, and were
    checked all the same)."""

    def machine() -> ProtocolFuzz:
        return ProtocolFuzz(harness)

    statistics: list[dict[str, Any]] = []
    with hypothesis.statistics.collector.with_value(statistics.append):
        run_state_machine_as_test(
            seed(run_seed)(machine),
            settings=settings(
                max_examples=examples,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                phases=(Phase.explicit, Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
                print_blob=False,
            ),
        )
    cases = statistics[0].get("generate-phase", {}).get("test-cases", []) if statistics else []
    return collections.Counter(case.get("status", "?") for case in cases)
