"""Resumable requests: a client whose socket drops mid-answer reconnects and
hears exactly the rest, with one terminal event; one that does not come back
is cancelled when the grace ends (docs/protocol.md, resume)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from chatd.config import RedisSettings, ServerSettings, SimSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

QUESTION = "tell me something about the weather in spring"


def resume_settings(
    make_settings: MakeSettings, grace: float = 5.0, tokens_per_s: float = 100, **tables: Any
) -> Any:
    return make_settings(
        sim=SimSettings(ttft_ms=10, tokens_per_s=tokens_per_s),
        server=ServerSettings(resume_grace_s=grace),
        **tables,
    )


async def resume(client: ChatClient, request_id: str, accepted: dict[str, Any], after: int) -> None:
    """Ask on ``client``, as ``request_id``, for the rest of the request that sent
    ``accepted``: its events after ``after``."""
    await client.send(
        {"type": "resume", "id": request_id, "request_id": accepted["request_id"], "after": after}
    )


async def full_answer(server: Chatd, message: str) -> str:
    """The answer the simulator gives ``message``, asked plainly."""
    async with open_chat_client(server.ws_url) as client:
        await client.chat("plain", message)
        assert (await client.finish("plain"))["type"] == "done"
        return client.answer("plain")


async def until_tokens(client: ChatClient, request_id: str, count: int) -> None:
    with trio.fail_after(10):
        while sum(e["type"] == "token" for e in client.events[request_id]) < count:
            await client._arrived.wait()


async def ask_and_drop(server: Chatd, tokens: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ask QUESTION resumably as "a" on a socket of its own, hear ``tokens`` tokens, then
    drop the socket; the accepted event and all that was heard."""
    async with open_chat_client(server.ws_url) as client:
        await client.chat("a", QUESTION, resumable=True)
        accepted = await client.wait_for("a", "accepted")
        await until_tokens(client, "a", tokens)
        await client.drop()
        return accepted, list(client.events["a"])


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if "seq" in e]


async def test_a_dropped_socket_resumes_with_exactly_the_missing_events(
    make_settings: MakeSettings,
) -> None:
    async with open_chatd(resume_settings(make_settings)) as server:
        assert server.sim is not None
        accepted, heard = await ask_and_drop(server, tokens=3)
        assert accepted["seq"] == 1
        numbers = seqs(heard)
        assert numbers == sorted(set(numbers)) and numbers[0] == 1
        last = numbers[-1]
        async with open_chat_client(server.ws_url) as second:
            await resume(second, "b", accepted, after=last)
            done = await second.finish("b")
            rest = second.events["b"]
        assert done["type"] == "done" and done["finish_reason"] == "stop"
        assert [e["type"] for e in rest].count("done") == 1 and rest[-1] is done
        more = seqs(rest)
        assert more == sorted(set(more)) and more[0] > last
        before = "".join(e["text"] for e in heard if e["type"] == "token")
        after = "".join(e["text"] for e in rest if e["type"] == "token")
        assert before and after
        assert before + after == await full_answer(server, QUESTION)
        assert server.sim.stats.client_disconnects == 0  # the upstream stream ran on


async def test_no_resume_within_the_grace_cancels_the_request(
    make_settings: MakeSettings,
) -> None:
    settings = resume_settings(make_settings, grace=0.3, tokens_per_s=5)
    async with open_chatd(settings) as server:
        assert server.sim is not None
        accepted, _heard = await ask_and_drop(server, tokens=1)
        assert server.sim.stats.active == 1  # still streaming, for the grace
        await wait_until(lambda: server.sim is not None and server.sim.stats.active == 0, within=5)
        assert server.sim.stats.client_disconnects == 1
        await wait_until(lambda: not server.pipeline.journals, within=5)
        async with open_chat_client(server.ws_url) as late:
            await resume(late, "b", accepted, after=1)
            error = await late.finish("b")
        assert error["code"] == "not_found"


async def test_without_the_flag_a_drop_still_cancels_at_once(make_settings: MakeSettings) -> None:
    async with open_chatd(resume_settings(make_settings, tokens_per_s=5)) as server:
        async with open_chat_client(server.ws_url) as client:
            await client.chat("a", QUESTION)
            await until_tokens(client, "a", 1)
            assert "seq" not in client.events["a"][-1]
            await client.drop()
        await wait_until(lambda: server.sim is not None and server.sim.stats.active == 0, within=5)


async def test_a_finished_answer_can_still_be_resumed_within_the_grace(
    make_settings: MakeSettings,
) -> None:
    async with open_chatd(resume_settings(make_settings)) as server:
        accepted, _heard = await ask_and_drop(server, tokens=0)
        await wait_until(lambda: not server.pipeline.requests, within=10)
        async with open_chat_client(server.ws_url) as second:
            await resume(second, "a", accepted, after=1)
            done = await second.finish("a")
        assert done["type"] == "done"
        assert second.answer("a") == await full_answer(server, QUESTION)


async def test_resuming_takes_over_and_cancel_works_from_there(
    make_settings: MakeSettings,
) -> None:
    """A resume while the first socket is still open moves the stream to the
    new one (the first stops hearing it); a cancel there stops the request."""
    async with open_chatd(resume_settings(make_settings, tokens_per_s=5)) as server:
        async with (
            open_chat_client(server.ws_url) as first,
            open_chat_client(server.ws_url) as second,
        ):
            await first.chat("a", QUESTION, resumable=True)
            accepted = await first.wait_for("a", "accepted")
            await until_tokens(first, "a", 1)
            await resume(second, "x", accepted, after=0)
            await until_tokens(second, "x", 1)
            assert second.events["x"][0]["type"] == "accepted"  # from the start
            await second.send({"type": "cancel", "id": "x"})
            done = await second.finish("x")
            assert done["finish_reason"] == "cancelled"
            assert "done" not in first.types("a")
        await wait_until(lambda: server.sim is not None and server.sim.stats.active == 0, within=5)


async def test_only_the_client_that_asked_can_resume(make_settings: MakeSettings) -> None:
    settings = make_settings(
        sim=SimSettings(ttft_ms=10, tokens_per_s=5),
        server=ServerSettings(resume_grace_s=5, api_keys=["alpha", "beta"]),
    )
    async with (
        open_chatd(settings) as server,
        open_chat_client(server.ws_url + "?api_key=alpha") as owner,
    ):
        await owner.chat("a", QUESTION, resumable=True)
        accepted = await owner.wait_for("a", "accepted")
        async with open_chat_client(server.ws_url + "?api_key=beta") as other:
            await other.send({"type": "resume", "id": "b", "request_id": accepted["request_id"]})
            refused = await other.finish("b")
        assert refused["code"] == "not_found"
        await owner.send({"type": "cancel", "id": "a"})
        assert (await owner.finish("a"))["finish_reason"] == "cancelled"


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ({"type": "resume", "id": "r", "request_id": "req_nope"}, "no request"),
        ({"type": "resume", "id": "r", "request_id": "req_nope", "after": -1}, "'after'"),
        ({"type": "resume", "id": "r", "request_id": "req_nope", "after": "3"}, "'after'"),
        ({"type": "chat", "id": "r", "message": "hi", "resumable": "yes"}, "'resumable'"),
    ],
)
async def test_bad_resume_frames_are_refused_with_their_id(
    make_settings: MakeSettings, frame: dict[str, Any], words: str
) -> None:
    async with (
        open_chatd(resume_settings(make_settings)) as server,
        open_chat_client(server.ws_url) as client,
    ):
        await client.send(frame)
        error = await client.finish("r")
        assert error["type"] == "error" and words in error["message"]


async def sse_until_tokens(
    server: Chatd, body: dict[str, Any], tokens: int
) -> list[tuple[str, str]]:
    """POST an SSE chat over a raw socket, read ``(id, data)`` pairs until
    ``tokens`` tokens came, then drop the connection."""
    port = int(server.url.rsplit(":", 1)[1])
    payload = orjson.dumps(body)
    heard: list[tuple[str, str]] = []
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as sock:
            await sock.send_all(
                b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            received = b""
            while sum(d.startswith('{"type":"token"') for _, d in heard) < tokens:
                received += await sock.receive_some()
                *blocks, received = received.split(b"\n\n")
                for block in blocks:
                    fields = dict(
                        line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                    )
                    if "data" in fields:
                        heard.append((fields.get("id", ""), fields["data"]))
    return heard


async def test_an_sse_stream_resumes_with_last_event_id(make_settings: MakeSettings) -> None:
    async with (
        open_chatd(resume_settings(make_settings)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert server.sim is not None
        server.sim.set_timing(tokens_per_s=20)
        heard = await sse_until_tokens(server, {"message": QUESTION, "resumable": True}, 3)
        last_id = heard[-1][0]
        request_id, _, seq = last_id.rpartition(":")
        assert request_id.startswith("req_") and int(seq) == len(heard)
        rest = await http.get(
            "/v1/chat/events", headers={"accept": "text/event-stream", "last-event-id": last_id}
        )
        lines = rest.text.splitlines()
        frames = [line[6:] for line in lines if line.startswith("data: ")]
        ids = [line[4:] for line in lines if line.startswith("id: ")]
        assert ids[0] == f"{request_id}:{int(seq) + 1}"
        assert '"done"' in frames[-1] and sum('"type":"done"' in f for f in frames) == 1
        text = "".join(
            orjson.loads(d).get("text", "")
            for d in [d for _, d in heard] + frames
            if '"type":"token"' in d
        )
        assert text == await full_answer(server, QUESTION)
        missing = await http.get("/v1/chat/events", headers={"last-event-id": "req_nope:3"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# --- across two instances on one Redis ---------------------------------------------------


@contextlib.asynccontextmanager
async def two_instances(
    make_settings: MakeSettings, redis_url: str, grace: float = 5.0
) -> AsyncIterator[tuple[Chatd, Chatd]]:
    """Two chatd on one Redis; the second talks to the first's simulator."""
    settings = attrs.evolve(
        resume_settings(make_settings, grace=grace), redis=RedisSettings(url=redis_url)
    )
    async with open_chatd(settings) as first:
        assert first.sim is not None
        other = attrs.evolve(settings, llm=attrs.evolve(settings.llm, url=first.sim.base_url))
        async with open_chatd(other) as second:
            yield first, second


async def drop_after_tokens(server: Chatd, tokens: int) -> tuple[str, list[dict[str, Any]]]:
    """A resumable chat on ``server``, its socket dropped after ``tokens`` tokens:
    its request id and what the client heard."""
    async with open_chat_client(server.ws_url) as client:
        await client.chat("a", QUESTION, resumable=True)
        accepted = await client.wait_for("a", "accepted")
        await until_tokens(client, "a", tokens)
        await client.drop()
        return accepted["request_id"], list(client.events["a"])


async def test_resume_on_another_instance(make_settings: MakeSettings, redis_url: str) -> None:
    async with two_instances(make_settings, redis_url) as (first, second):
        assert first.sim is not None
        first.sim.set_timing(tokens_per_s=30)
        request_id, heard = await drop_after_tokens(first, 3)
        last = seqs(heard)[-1]
        async with open_chat_client(second.ws_url) as client:
            await client.send(
                {"type": "resume", "id": "b", "request_id": request_id, "after": last}
            )
            done = await client.finish("b")
            rest = client.events["b"]
        assert done["type"] == "done" and done["finish_reason"] == "stop"
        assert [e["type"] for e in rest].count("done") == 1
        more = seqs(rest)
        assert more == sorted(set(more)) and more[0] == last + 1
        text = "".join(e["text"] for e in heard + rest if e["type"] == "token")
        assert text == await full_answer(first, QUESTION)
        assert first.sim.stats.client_disconnects == 0


async def test_a_follower_elsewhere_holds_the_request_past_the_grace_and_can_cancel_it(
    make_settings: MakeSettings, redis_url: str
) -> None:
    async with two_instances(make_settings, redis_url, grace=1.0) as (first, second):
        assert first.sim is not None
        first.sim.set_timing(tokens_per_s=4)
        request_id, heard = await drop_after_tokens(first, 1)
        async with open_chat_client(second.ws_url) as client:
            await client.send(
                {"type": "resume", "id": "b", "request_id": request_id, "after": seqs(heard)[-1]}
            )
            await until_tokens(client, "b", 1)
            await trio.sleep(2.5)  # past the grace: followed from the second, it runs on
            assert first.sim.stats.active == 1
            await client.send({"type": "cancel", "id": "b"})
            done = await client.finish("b")
        assert done["finish_reason"] == "cancelled"
        await wait_until(lambda: first.sim is not None and first.sim.stats.active == 0, within=5)
        assert first.sim.stats.client_disconnects == 1


async def test_another_instance_refuses_what_it_cannot_find(
    make_settings: MakeSettings, redis_url: str
) -> None:
    async with (
        two_instances(make_settings, redis_url) as (_, second),
        open_chat_client(second.ws_url) as client,
    ):
        await client.send({"type": "resume", "id": "b", "request_id": "req_nope", "after": 0})
        assert (await client.finish("b"))["code"] == "not_found"
