"""Reading the simulator's answers the simple way: request bodies and SSE events."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio

COMPLETIONS = "/v1/chat/completions"
DONE = "[DONE]"


def tool(name: str) -> dict[str, Any]:
    """An OpenAI function tool with no declared parameters."""
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


TOOLS = [tool("calculator"), tool("clock"), tool("frequently_asked")]


def chat(text: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    """A chat-completions body asking ``text`` as the one user message."""
    return {
        "model": "test-model",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **extra,
    }


async def read_events(response: httpx.Response) -> list[Any]:
    """Every ``data:`` payload of an SSE response: parsed JSON, or ``DONE``."""
    events: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(DONE if payload == DONE else orjson.loads(payload))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


def content_of(events: list[Any]) -> str:
    """The streamed text: every chunk's ``delta.content`` joined."""
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e["choices"]
    )


async def send_raw_completion(host: str, port: int, body: dict[str, Any]) -> trio.SocketStream:
    """Open a bare TCP connection and send one completion request on it.

    Tests that walk away mid-answer use this instead of httpx, whose
    generators cannot be abandoned half-read without warnings.
    """
    stream = await trio.open_tcp_stream(host, port)
    payload = orjson.dumps(body)
    head = (
        f"POST {COMPLETIONS} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + payload)
    return stream


async def receive_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    """Read until ``marker`` has arrived (or the peer closed); return all bytes read."""
    data = b""
    while marker not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data
