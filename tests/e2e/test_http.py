"""``POST /v1/chat`` (JSON and SSE), ``/healthz`` and ``/readyz`` over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
import trio

from chatd.config import LimitsSettings, ServerSettings
from chatd.pipeline import ChatInput, Pipeline
from chatd.pipeline.events import Accepted
from chatd.pipeline.request import RequestOutput
from chatd.testing import Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import CHAT_ANSWER_FIELDS, MakeSettings, sse_events


@pytest.fixture
async def http(chatd: Chatd) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=chatd.url, timeout=10) as client:
        yield client


async def test_json_answer(http: httpx.AsyncClient) -> None:
    """Without SSE, one JSON object answers with the whole text and the done fields."""
    response = await http.post("/v1/chat", json={"message": "what is 6*7?"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CHAT_ANSWER_FIELDS
    assert body["path"] == "tools"
    assert "42" in body["answer"]
    assert body["finish_reason"] == "stop"


async def test_sse_stream(http: httpx.AsyncClient) -> None:
    """With Accept: text/event-stream the protocol's events arrive as SSE, done last."""
    response = await http.post(
        "/v1/chat",
        json={"message": "How do I reset my password?"},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _data in events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "done"
    assert "route" in kinds and "token" in kinds
    assert all(data["type"] == kind for kind, data in events)
    assert events[-1][1]["path"] == "tool_stream"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "bad_request"),
        (b'{"message": 5}', 400, "bad_request"),
        (b'{"message": "hi", "session": 1}', 400, "bad_request"),
        (b"[]", 400, "bad_request"),
    ],
)
async def test_bad_bodies(http: httpx.AsyncClient, body: bytes, status: int, code: str) -> None:
    """Malformed bodies get 400 with an error object."""
    response = await http.post(
        "/v1/chat", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_error_statuses(make_settings: MakeSettings) -> None:
    """401, 413, 429 and 503 each carry their protocol code; retry hints as Retry-After."""
    settings = make_settings(
        server=ServerSettings(api_keys=["k"]),
        limits=LimitsSettings(max_message_chars=10, rate_per_minute=1),
    )
    async with open_chatd(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/chat", json={"message": "hi"})
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
        auth = {"Authorization": "Bearer k"}
        response = await http.post("/v1/chat", json={"message": "x" * 11}, headers=auth)
        assert (response.status_code, response.json()["error"]["code"]) == (413, "too_large")
        assert (await http.post("/v1/chat", json={"message": "hi"}, headers=auth)).is_success
        response = await http.post("/v1/chat", json={"message": "hi"}, headers=auth)
        assert (response.status_code, response.json()["error"]["code"]) == (429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        request_id = response.json()["error"]["request_id"]
        assert request_id.startswith("req_") and response.headers["x-request-id"] == request_id
        server.pipeline.start_draining()
        response = await http.post("/v1/chat", json={"message": "hi"}, headers=auth)
        assert (response.status_code, response.json()["error"]["code"]) == (503, "shutting_down")


async def test_upstream_error_is_502(chatd: Chatd, http: httpx.AsyncClient) -> None:
    """An LLM failing mid-way is upstream_error over HTTP too."""
    assert chatd.sim is not None
    chatd.sim.set_fault("error", status=500)
    response = await http.post("/v1/chat", json={"message": "hello"})
    assert (response.status_code, response.json()["error"]["code"]) == (502, "upstream_error")


async def test_sse_client_leaving_cancels(chatd: Chatd) -> None:
    """An SSE client that disconnects mid-answer cancels the request and its LLM call."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=10)
    body = b'{"message": "tell me a long story about the sea"}'
    port = int(chatd.url.rsplit(":", 1)[1])
    with trio.fail_after(10):
        # A raw socket, so leaving is a plain close (httpx's nested body iterators
        # would outlive a break as unclosed async generators).
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            received = b""
            while b"event: token" not in received:
                received += await stream.receive_some()
    sim = chatd.sim
    await wait_until(lambda: sim.statistics().client_disconnects >= 1, within=5)
    await wait_until(lambda: not chatd.pipeline.admission.statistics().llm_streams_in_use, within=1)


async def test_health_and_readiness(chatd: Chatd, http: httpx.AsyncClient) -> None:
    """healthz is 200; readyz is 200 until a drain begins, then 503."""
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["dependencies"]["llm"]["url"] == chatd.running.llm_url
    chatd.pipeline.start_draining()
    assert (await http.get("/readyz")).status_code == 503


async def test_metrics_count_requests(chatd: Chatd, http: httpx.AsyncClient) -> None:
    """/metrics counts a finished request by path and outcome, and shows the live gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    assert (await http.post("/v1/chat", json={"message": "what is 3*3?"})).is_success
    response = await http.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("chatd_requests_total", (("outcome", "done"), ("path", "tools")))] == 1
    assert samples[("chatd_breaker_state", (("dependency", "llm"),))] == 0
    assert samples[("chatd_limiter_in_use", (("limiter", "llm_streams"),))] == 0
    assert ("chatd_time_to_first_token_seconds_count", (("path", "tools"),)) in samples
    # Path A: two LLM calls to the one endpoint, one tool, one queue wait.
    llm_ok = (("endpoint", "llm"), ("outcome", "ok"))
    assert samples[("chatd_llm_call_duration_seconds_count", llm_ok)] == 2
    assert samples[("chatd_llm_time_to_first_event_seconds_count", llm_ok)] == 2
    tool = (("outcome", "ok"), ("tool", "calculator"))
    assert samples[("chatd_tool_duration_seconds_count", tool)] == 1
    assert samples[("chatd_queue_wait_seconds_count", ())] == 1
    opened = (("dependency", "llm"), ("to", "open"))
    assert samples[("chatd_breaker_transitions_total", opened)] == 0
    assert not [name for name, _ in samples if name.endswith("_created")]


async def test_sse_request_failure_stays_its_own(
    chatd: Chatd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One SSE request's work raises mid-way (injected): it ends with an
    ``internal`` error, the SSE streams beside it end with their own terminal
    events, and later requests are served."""
    run = Pipeline.run

    async def faulty(
        self: Pipeline, chat: ChatInput, out: RequestOutput, scope: trio.CancelScope
    ) -> None:
        if chat.message != "boom":
            return await run(self, chat, out, scope)
        await out.send(Accepted("req_boom"))
        await trio.sleep(0.2)
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Pipeline, "run", faulty)
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=50, tokens_per_s=100)
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    async def stream(http: httpx.AsyncClient, name: str, message: str) -> None:
        headers = {"Accept": "text/event-stream"}
        response = await http.post("/v1/chat", json={"message": message}, headers=headers)
        results[name] = sse_events(response.text)

    async with httpx.AsyncClient(base_url=chatd.url, timeout=20) as http:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    story = f"tell me a long story about the sea, number {i}"
                    nursery.start_soon(stream, http, f"ok{i}", story)
                nursery.start_soon(stream, http, "boom", "boom")
            (kind, error) = results["boom"][-1]
            assert (kind, error["code"]) == ("error", "internal")
            assert "injected" not in error["message"]
            for i in range(3):
                kinds = [kind for kind, _data in results[f"ok{i}"]]
                assert kinds[0] == "accepted" and kinds[-1] == "done" and "token" in kinds
            await stream(http, "later", "hello there")
            assert results["later"][-1][0] == "done"
            assert (await http.post("/v1/chat", json={"message": "hi"})).is_success


@pytest.mark.parametrize("stream", [False, True])
async def test_oversized_chunked_body_is_refused_while_it_streams(
    chatd: Chatd, stream: bool
) -> None:
    """A chunked body with no Content-Length gets 413 once it passes the limit,
    before the client has sent the rest (it never sends the end here)."""
    port = int(chatd.url.rsplit(":", 1)[1])
    accept = b"Accept: text/event-stream\r\n" if stream else b""
    chunk = b"x" * 16384
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as sock:
            await sock.send_all(
                b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + accept
                + b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(8):  # 128 KiB, past the 64 KiB limit, and no end chunk
                await sock.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            received = b""
            while b"\r\n\r\n" not in received:
                received += await sock.receive_some()
    assert received.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("trusted", [True, False])
async def test_rate_limits_follow_x_forwarded_for_from_trusted_proxies_only(
    make_settings: MakeSettings, trusted: bool
) -> None:
    """Behind a trusted proxy each forwarded address has its own limit, on
    every transport; from anyone else the header changes nothing."""
    settings = make_settings(
        server=ServerSettings(trusted_proxies=["127.0.0.1"] if trusted else []),
        limits=LimitsSettings(rate_per_minute=1),
    )

    def via(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"{address}, 127.0.0.1"}

    async with open_chatd(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        first = await http.post("/v1/chat", json={"message": "hi"}, headers=via("203.0.113.1"))
        assert first.is_success
        sse = {"Accept": "text/event-stream", **via("203.0.113.2")}
        second = await http.post("/v1/chat", json={"message": "hi"}, headers=sse)
        assert ("event: done" in second.text) is trusted
        headers = list(via("203.0.113.3").items())
        async with open_chat_client(server.ws_url, extra_headers=headers) as client:
            await client.chat("c", "hi")
            assert (await client.finish("c"))["type"] == ("done" if trusted else "error")
        again = await http.post("/v1/chat", json={"message": "hi"}, headers=via("203.0.113.1"))
        assert again.status_code == 429


async def test_refusals_and_failures_are_logged_once_at_their_level(
    make_settings: MakeSettings,
) -> None:
    """A body refused before any request exists leaves one info line with its
    code; a request that failed, one warning line."""
    settings = make_settings(limits=LimitsSettings(max_message_chars=10, rate_per_minute=1))
    json = {"content-type": "application/json"}
    async with open_chatd(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        with structlog.testing.capture_logs() as logs:
            assert (await http.post("/v1/chat", content=b"{", headers=json)).status_code == 400
            too_long = await http.post("/v1/chat", json={"message": "x" * 11})
            assert too_long.status_code == 413
            assert (await http.post("/v1/chat", json={"message": "hi"})).is_success
            assert (await http.post("/v1/chat", json={"message": "hi"})).status_code == 429
    refused = [line for line in logs if line["event"] == "request refused"]
    assert [(line["code"], line["log_level"]) for line in refused] == [("bad_request", "info")]
    failed = [
        (line["code"], line["log_level"]) for line in logs if line["event"] == "request failed"
    ]
    assert failed == [("too_large", "warning"), ("rate_limited", "warning")]
