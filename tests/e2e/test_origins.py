"""Cross-site WebSocket hijacking, DNS rebinding and CORS-simple posts, end to
end (issue 15: each of these was served once)."""

from __future__ import annotations

import httpx
import pytest
import trio

from chatd.config import ServerSettings
from chatd.testing import Chatd, open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings


async def upgrade(chatd: Chatd, **headers: str) -> bytes:
    """The status line a WebSocket upgrade with ``headers`` gets."""
    port = int(chatd.url.rsplit(":", 1)[1])
    lines = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    head = "GET /v1/ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(head.encode() + b"\r\n")
            received = b""
            while b"\r\n" not in received:
                received += await stream.receive_some()
    return received.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, b"101"),
        ({"Origin": "http://127.0.0.1:3000"}, b"101"),
        ({"Origin": "http://localhost:5173"}, b"101"),
        ({"Origin": "http://evil.example"}, b"403"),
        ({"Origin": "null"}, b"403"),
        ({"Origin": "https://attacker.test:8443"}, b"403"),
        ({"Host": "rebind.evil.example:8080"}, b"403"),
        ({"Host": "rebind.evil.example:8080", "Origin": "http://rebind.evil.example:8080"}, b"403"),
    ],
)
async def test_websocket_upgrade_checks_origin_and_host(
    chatd: Chatd, headers: dict[str, str], status: bytes
) -> None:
    """Only pages of allowed origins, naming a loopback host, get a WebSocket."""
    line = await upgrade(chatd, **headers)
    assert line.split()[1] == status, line


async def test_configured_origins(make_settings: MakeSettings) -> None:
    """With allowed_origins set, those pages (and no others) are served; "*" serves all."""
    for allowed, origin, status in [
        (["https://app.example"], "https://app.example", b"101"),
        (["https://app.example"], "http://localhost:3000", b"403"),
        (["*"], "http://evil.example", b"101"),
    ]:
        settings = make_settings(server=ServerSettings(allowed_origins=allowed))
        async with open_chatd(settings) as chatd:
            assert (await upgrade(chatd, Origin=origin)).split()[1] == status


async def test_http_chat_needs_json_and_an_allowed_origin(chatd: Chatd) -> None:
    """A cross-site text/plain post (no preflight) is refused; so is any request
    from a page not allowed, or naming a host that is not loopback; allowed
    pages get CORS headers."""
    async with httpx.AsyncClient(base_url=chatd.url, timeout=10) as http:
        chat = b'{"message": "hello there"}'
        plain = await http.post("/v1/chat", content=chat, headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"]["code"] == "bad_request"
        evil = await http.post("/v1/chat", content=chat, headers={
            "content-type": "application/json", "origin": "http://evil.example"})  # fmt: skip
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden"
        rebound = await http.get("/healthz", headers={"host": "rebind.evil.example"})
        assert rebound.status_code == 403
        local = "http://localhost:3000"
        preflight = await http.options("/v1/chat", headers={
            "origin": local, "access-control-request-method": "POST"})  # fmt: skip
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == local
        answered = await http.post("/v1/chat", content=chat, headers={
            "content-type": "application/json", "origin": local})  # fmt: skip
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == local
        direct = await http.post("/v1/chat", json={"message": "hello there"})
        assert direct.status_code == 200 and "access-control-allow-origin" not in direct.headers


async def test_our_own_page_is_served(chatd: Chatd) -> None:
    """A page served by chatd itself (its own origin) gets its WebSocket."""
    headers = [("Origin", chatd.url)]
    async with open_chat_client(chatd.ws_url, extra_headers=headers) as client:
        with trio.fail_after(10):
            await client.chat("a", "hello there")
            assert (await client.finish("a"))["type"] == "done"
