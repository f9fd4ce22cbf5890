"""The harness: one chatd under fuzzing, a bystander streaming answers all
along, the steps' way into trio, and the checks between examples."""

from __future__ import annotations

import collections
import ctypes
import gc
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs
import httpx
import orjson
import trio

from chatd.llm.sim.small_talk import compose_reply
from chatd.testing import Chatd, open_chat_client, wait_until
from tests.e2e.conftest import CHAT_ANSWER_FIELDS, sse_events

from .client import REPLY_WAIT_S, FuzzSocket
from .ledger import Mismatch, event_problem
from .replies import HTTPCase, frame
from .strategies import QUESTIONS

T = TypeVar("T")


def settled_rss() -> int:
    """This process's resident memory after a collection, and after glibc
    gave back the free memory it keeps (each thread's malloc arena holds the
    peak of what that thread once used: hypothesis's, in its thread)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


@attrs.define
class Bystander:
    """A connection that streams answers the whole time, each checked word for
    word against the simulator's deterministic reply."""

    url: str
    in_flight: bool = False
    answers: int = 0
    failure: str | None = None
    finished: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, stop: trio.Event) -> None:
        try:
            async with open_chat_client(self.url) as client:
                while not stop.is_set():
                    request_id = f"b{self.answers}"
                    question = f"tell me a long story about the sea, part {self.answers}"
                    self.in_flight = True
                    with trio.fail_after(10):
                        await client.chat(request_id, question)
                        end = await client.finish(request_id)
                    self.in_flight = False
                    answer = client.answer(request_id)
                    types = client.types(request_id)
                    del client.events[request_id]
                    if end["type"] != "done" or end["finish_reason"] != "stop":
                        raise Mismatch(f"the bystander's {request_id} ended {end}")
                    if answer != compose_reply(question) or types.count("done") != 1:
                        raise Mismatch(f"the bystander's {request_id} came out wrong: {types}")
                    self.answers += 1
                    await trio.sleep(0.05)
        except Exception as exc:  # reported by the next example's checks
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()


@attrs.define
class Harness:
    """One chatd under fuzzing, and what the steps share."""

    chatd: Chatd
    nursery: trio.Nursery
    http: httpx.AsyncClient
    bystander: Bystander
    seed: int
    spare: FuzzSocket | None = None
    """A connection the last example's probe opened and had answered."""
    counts: collections.Counter[str] = attrs.field(factory=collections.Counter)
    seconds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """Time spent in trio per kind of step (the rest is hypothesis's)."""

    @property
    def port(self) -> int:
        return int(self.chatd.url.rsplit(":", 1)[1])

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the trio loop, from the hypothesis thread, bounded."""

        async def bounded() -> T:
            with trio.fail_after(30):
                return await fn(*args)

        started = time.perf_counter()
        try:
            return trio.from_thread.run(bounded)
        finally:
            self.seconds[getattr(fn, "__name__", "?")] += time.perf_counter() - started

    def quiet(self) -> bool:
        """Nothing of the fuzz's left in chatd but the bystander's connection
        (and its one request at most) and the next example's connection."""
        busy = 1 if self.bystander.in_flight else 0
        return (
            len(self.chatd.running.state.connections) <= 1 + (self.spare is not None)
            and len(self.chatd.pipeline.requests) <= busy
            and self.sim_active() <= busy
        )

    async def wait_quiet(self) -> None:
        """Wait for :meth:`quiet`, or say what is left."""
        with trio.move_on_after(REPLY_WAIT_S):
            await wait_until(self.quiet, within=REPLY_WAIT_S + 1)
            return
        state = self.chatd.running.state
        raise Mismatch(
            f"left in chatd: {len(state.connections)} connections, requests "
            f"{self.chatd.pipeline.requests.statistics()}, {self.sim_active()} LLM streams"
        )

    async def begin_example(self) -> FuzzSocket | None:
        """The connection the last probe left, for a new example to start with,
        once chatd is quiet (after a failed example it may take a moment)."""
        with trio.move_on_after(REPLY_WAIT_S):
            await wait_until(self.quiet, within=REPLY_WAIT_S + 1)
        sock, self.spare = self.spare, None
        return sock

    def sim_active(self) -> int:
        assert self.chatd.sim is not None
        return self.chatd.sim.statistics().active

    async def finish_example(self, sockets: Sequence[FuzzSocket]) -> None:
        """Each socket still open settles and closes, and its whole exchange is
        checked, while a new connection asks a normal chat; then nothing of
        the example may be left in chatd. The new connection, answered, is
        the next example's first (a connection less to open per example)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.probe, QUESTIONS[self.counts["examples"] % len(QUESTIONS)])
                for sock in sockets:
                    nursery.start_soon(_finish_socket, sock)
            await self.wait_quiet()
        finally:  # a failed example leaves nothing open for the next
            for sock in sockets:
                self.counts["events"] += len(sock.events)
                await trio.aclose_forcefully(sock.stream)
        if self.bystander.failure is not None:
            raise Mismatch(self.bystander.failure)
        self.counts["examples"] += 1

    async def probe(self, question: str) -> None:
        """A normal chat on a new connection is answered; the connection is
        kept as :attr:`spare`."""
        if self.spare is not None:  # the example did not take it
            await self.spare.close()
            self.spare.check(owed="all")
            self.spare = None
        sock = await FuzzSocket.connect(self.port, self.nursery)
        try:
            chat = {"type": "chat", "id": "probe", "message": question}
            await sock.send([frame(orjson.dumps(chat).decode(), "probe")])
            await sock.settle()
        except BaseException:
            await sock.drop("fin")
            raise
        if sock.events[-1]["type"] != "done" or "token" not in [e["type"] for e in sock.events]:
            await sock.drop("fin")
            raise Mismatch(f"a new connection got no answer: {sock.events}")
        self.spare = sock

    async def post(self, case: HTTPCase) -> None:
        """One ``POST /v1/chat``, its answer checked against ``case``."""
        headers = {"Accept": "text/event-stream"} if case.sse else {}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        response = await self.http.post("/v1/chat", content=case.body, headers=headers)
        self.counts[f"http_{response.status_code}"] += 1
        where = f"{case!r} -> {response.status_code} {response.text[:300]!r}"
        if response.status_code != case.status:
            raise Mismatch(f"status {response.status_code}, expected {case.status}: {where}")
        if response.status_code != 200:
            error = response.json()["error"]
            if error["code"] != case.code or not error["message"]:
                raise Mismatch(f"expected {case.code}: {where}")
        elif case.sse:
            events = sse_events(response.text)
            kinds = [kind for kind, _ in events]
            ends = [kind for kind in kinds if kind in ("done", "error")]
            ids = {data.get("id") for _, data in events}
            if (
                len(ends) != 1
                or kinds[-1] not in ("done", "error")
                or any(data["type"] != kind or event_problem(data) for kind, data in events)
                or len(ids) != 1
                or (case.code is None) != (kinds[-1] == "done")
                or (case.code is not None and events[-1][1]["code"] != case.code)
            ):
                raise Mismatch(f"a bad event stream: {where}")
        else:
            body = response.json()
            if set(body) != CHAT_ANSWER_FIELDS or not (
                isinstance(body["answer"], str) and body["answer"]
            ):
                raise Mismatch(f"a bad answer: {where}")

    async def abandon(self, how: str) -> None:
        """An HTTP client that goes mid-request: during its body, or once the
        answer began streaming."""
        body = orjson.dumps({"message": "tell me a long story about the sea"})
        head = (
            b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        try:
            if how == "mid_body":
                await stream.send_all(head + body[:10])
                await trio.sleep(0.005)
            else:
                await stream.send_all(head + body)
                received = b""
                with trio.move_on_after(5):
                    while b"event: " not in received:
                        more = await stream.receive_some()
                        if not more:
                            break
                        received += more
                if not received.startswith(b"HTTP/1.1 200"):
                    raise Mismatch(f"an SSE chat got {received[:200]!r}")
        finally:
            await stream.aclose()


async def _finish_socket(sock: FuzzSocket) -> None:
    if sock.ended == "open":
        await sock.settle()
        await sock.close()
        sock.check(owed="all")
    else:
        await sock.close()
