"""Fault injection, statistics and disconnect detection, over real loopback."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio

from chatd.llm.sim import SimServer, SimStats

from .openai_wire import (
    COMPLETIONS,
    DONE,
    TOOLS,
    chat,
    content_of,
    read_events,
    receive_until,
    send_raw_completion,
)

GUARD_S = 10


async def set_fault(client: httpx.AsyncClient, **fault: Any) -> dict[str, Any]:
    response = await client.post("/_sim/faults", json=fault)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def wait_for(sim: SimServer, **expected: int) -> None:
    """Poll the stats until they show ``expected`` (callers bound it with a guard)."""
    # Polling is the point: the test watches counters the way an operator would.
    while any(getattr(sim.statistics(), k) != v for k, v in expected.items()):  # noqa: ASYNC110
        await trio.sleep(0.001)


@pytest.mark.parametrize(
    ("status", "kind"), [(None, "server_error"), (503, "server_error"), (429, "requests")]
)
async def test_error_fault_answers_status_and_openai_error(
    sim: SimServer, client: httpx.AsyncClient, status: int | None, kind: str
) -> None:
    """Mode error answers every completion with the status and an OpenAI error body."""
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="error", **({} if status is None else {"status": status}))
        for stream in (True, False):
            response = await client.post(COMPLETIONS, json=chat("hi", stream=stream))
            assert response.status_code == (status or 500)
            error = response.json()["error"]
            assert set(error) >= {"message", "type", "code"}
            assert error["type"] == kind
    assert sim.statistics() == SimStats(requests=2, active=0, completed=0, client_disconnects=0)


async def test_hang_then_client_gives_up_counts_a_disconnect(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """Mode hang never answers; the client's timeout closes the connection, which is counted."""
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="hang")
        with pytest.raises(httpx.ReadTimeout):
            await client.post(COMPLETIONS, json=chat("hi"), timeout=0.2)
        await wait_for(sim, client_disconnects=1, active=0)
    assert sim.statistics().completed == 0


async def test_faults_never_touch_control_endpoints(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """While completions hang or fail, /_sim and /v1/models answer at once."""
    with trio.fail_after(GUARD_S):
        for fault in ({"mode": "hang"}, {"mode": "error", "status": 500}):
            await set_fault(client, **fault)
            assert (await client.get("/_sim/stats")).status_code == 200
            assert (await client.get("/v1/models")).status_code == 200
            assert (await client.get("/_sim/last_request")).status_code == 200


async def test_slow_fault_applies_its_timing(client: httpx.AsyncClient) -> None:
    """Mode slow answers normally, but no sooner than its own ttft_ms."""
    with trio.fail_after(GUARD_S):
        fault = await set_fault(client, mode="slow", ttft_ms=150, tokens_per_s=1000)
        assert (fault["mode"], fault["ttft_ms"], fault["tokens_per_s"]) == ("slow", 150, 1000)
        start = trio.current_time()
        response = await client.post(COMPLETIONS, json=chat("hi", stream=False))
    assert trio.current_time() - start >= 0.15
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_cut_drops_the_connection_after_n_tokens(client: httpx.AsyncClient) -> None:
    """Mode cut sends exactly N content tokens, then closes: no final chunk, no [DONE]."""
    lines: list[str] = []
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="cut", after_tokens=3)
        async with client.stream("POST", COMPLETIONS, json=chat("hello there")) as response:
            with pytest.raises(httpx.RemoteProtocolError):
                async for line in response.aiter_lines():
                    lines.append(line)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(COMPLETIONS, json=chat("hello there", stream=False))
    events = [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert len([e for e in events if e["choices"][0]["delta"].get("content")]) == 3
    assert not any(e["choices"][0]["finish_reason"] for e in events)
    assert "data: [DONE]" not in lines


async def test_cut_counts_tool_call_pieces(client: httpx.AsyncClient) -> None:
    """For tool calls, cut counts the head and the argument pieces as tokens."""
    lines: list[str] = []
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="cut", after_tokens=2)
        body = chat("what is 12*(3+4)?", tools=TOOLS)
        async with client.stream("POST", COMPLETIONS, json=body) as response:
            with pytest.raises(httpx.RemoteProtocolError):
                async for line in response.aiter_lines():
                    lines.append(line)
    assert len([line for line in lines if line.startswith("data: ")]) == 2


async def test_garbage_sends_a_chunk_that_is_not_json(client: httpx.AsyncClient) -> None:
    """Mode garbage puts one non-JSON data line right after the first chunk."""
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="garbage")
        async with client.stream("POST", COMPLETIONS, json=chat("hello there")) as response:
            data = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]

    def is_json(payload: str) -> bool:
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        return True

    bad = [i for i, payload in enumerate(data) if payload != DONE and not is_json(payload)]
    assert len(bad) == 1
    assert '"content":"' in data[bad[0] - 1]  # right after the first token
    assert data[-1] == DONE


async def test_ok_restores_normal_answers(client: httpx.AsyncClient) -> None:
    """After any fault, mode ok brings back normal answers at the base timing."""
    with trio.fail_after(GUARD_S):
        await set_fault(client, mode="slow", ttft_ms=5000)
        fault = await set_fault(client, mode="ok")
        assert fault["mode"] == "ok"
        assert fault["ttft_ms"] is None
        async with client.stream("POST", COMPLETIONS, json=chat("hello there")) as response:
            events = await read_events(response)
    assert events[-1] == DONE
    assert content_of(events)


@pytest.mark.parametrize(
    "fault",
    [
        {"mode": "explode"},
        {"status": 500},
        {"mode": "error", "status": 200},
        {"mode": "slow", "tokens_per_s": -1},
        {"mode": "cut", "after_tokens": 0},
        {"mode": "slow", "ttft_ms": True},
    ],
)
async def test_bad_fault_is_400(sim: SimServer, client: httpx.AsyncClient, fault: Any) -> None:
    """An unknown mode or out-of-range value is refused and the fault stays as it was."""
    with trio.fail_after(GUARD_S):
        response = await client.post("/_sim/faults", json=fault)
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert sim.fault.mode == "ok"


async def test_set_fault_checks_its_arguments(sim: SimServer) -> None:
    """The in-process API refuses what the endpoint refuses."""
    with pytest.raises(ValueError, match="fault mode"):
        sim.set_fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens_per_s"):
        sim.set_timing(tokens_per_s=0)


async def test_stats_count_and_reset(sim: SimServer, client: httpx.AsyncClient) -> None:
    """requests and completed count answers; POST /_sim/reset zeroes them."""
    with trio.fail_after(GUARD_S):
        for stream in (True, False):
            await client.post(COMPLETIONS, json=chat("hi", stream=stream))
        stats = (await client.get("/_sim/stats")).json()
        assert stats == {"requests": 2, "active": 0, "completed": 2, "client_disconnects": 0}
        assert sim.stats == SimStats(requests=2, completed=2)
        reset = await client.post("/_sim/reset")
        assert reset.json() == {"requests": 0, "active": 0, "completed": 0, "client_disconnects": 0}
    assert sim.statistics() == SimStats()


async def test_disconnect_mid_stream_cancels_the_answer(sim: SimServer) -> None:
    """A client closing mid-stream cancels the answer (never completed) and is counted."""
    sim.set_timing(ttft_ms=0, tokens_per_s=20)
    with trio.fail_after(GUARD_S):
        stream = await send_raw_completion(sim.host, sim.port, chat("hello there"))
        async with stream:
            await receive_until(stream, b"data: ")
            assert sim.statistics().active == 1
        await wait_for(sim, client_disconnects=1, active=0)
    assert sim.statistics() == SimStats(requests=1, client_disconnects=1)


async def test_disconnect_before_first_token_is_counted(sim: SimServer) -> None:
    """Leaving during the time to first token is noticed too, though nothing was sent."""
    sim.set_timing(ttft_ms=60_000)
    with trio.fail_after(GUARD_S):
        for stream_answer in (True, False):
            stream = await send_raw_completion(sim.host, sim.port, chat("hi", stream=stream_answer))
            async with stream:
                await wait_for(sim, active=1)
        await wait_for(sim, client_disconnects=2, active=0)


async def test_reset_keeps_counting_what_is_active(sim: SimServer) -> None:
    """Resetting while a stream runs keeps it active, so active never goes negative."""
    sim.set_timing(ttft_ms=60_000)
    with trio.fail_after(GUARD_S):
        stream = await send_raw_completion(sim.host, sim.port, chat("hi"))
        async with stream:
            await wait_for(sim, active=1)
            sim.reset_stats()
            assert sim.statistics() == SimStats(active=1)
        await wait_for(sim, active=0, client_disconnects=1)
