"""permessage-deflate is refused unless server.websocket_deflate is set."""

from __future__ import annotations

import base64
import os

import attrs
import pytest
import trio

from chatd.config import ServerSettings
from chatd.testing import open_chatd
from tests.e2e.conftest import MakeSettings


async def handshake_headers(url: str) -> dict[str, str]:
    """Open /v1/ws offering permessage-deflate, as browsers do; the response headers."""
    host, port = url.removeprefix("http://").split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines[0]
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}


@pytest.mark.parametrize("deflate", [False, True])
async def test_deflate_only_when_configured(make_settings: MakeSettings, deflate: bool) -> None:
    settings = make_settings()
    settings = attrs.evolve(
        settings, server=attrs.evolve(settings.server, websocket_deflate=deflate)
    )
    async with open_chatd(settings) as chatd:
        with trio.fail_after(10):
            headers = await handshake_headers(chatd.url)
    accepted = headers.get("sec-websocket-extensions", "")
    assert ("permessage-deflate" in accepted) is deflate


def test_default_is_off() -> None:
    assert ServerSettings().websocket_deflate is False
