"""The floor: a bare WebSocket relay of the simulated LLM's token stream, with no logic.

``python benchmarks/relay.py --port 0 --llm-url http://127.0.0.1:PORT/v1`` prints one JSON
line with its ``url`` and ``ws_url`` (as ``chatd serve`` does), then speaks just enough of
protocol.md for the load generator: a ``chat`` frame streams one completion of the message
(one user turn, nothing else) over h11 on a kept-alive connection, the tokens of each read as
one ``token`` frame, then ``done``; ``cancel``, or the client going away, closes it upstream.

No admission, routing, flights, cache, sessions, spans, logs or metrics: what is left is
trio-websocket, h11 and orjson per token, the floor chatd's CPU per token is compared with
(``targets.py``). It imports nothing of chatd.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import h11
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

OnText = Callable[[str], Awaitable[None]]
STREAMED = {"stream": True, "stream_options": {"include_usage": True}}


class UpstreamFailed(Exception):
    """The simulator answered with an error status or broke the stream."""


class Upstream:
    """Streamed completions against one OpenAI-compatible server, over h11.

    Connections that ended a response cleanly are kept for the next call (a
    list, not a pool: no limits, no accounting); any other is closed.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = parts.path.rstrip("/") + "/chat/completions"
        self.headers = [("host", f"{self.host}:{self.port}"), ("content-type", "application/json")]
        self.headers.append(("accept", "text/event-stream"))
        self.idle: list[trio.SocketStream] = []

    async def stream(self, message: str, on_text: OnText) -> int:
        """Stream the answer to ``message`` into ``on_text``, one call per read; the
        completion tokens the server reported."""
        turn = [{"role": "user", "content": message}]
        body = orjson.dumps({"model": "chatd-sim", "messages": turn, **STREAMED})
        headers = [*self.headers, ("content-length", str(len(body)))]
        request = h11.Request(method="POST", target=self.target, headers=headers)
        sock = self.idle.pop() if self.idle else await trio.open_tcp_stream(self.host, self.port)
        conn = h11.Connection(h11.CLIENT)
        reusable = False
        try:
            await sock.send_all(
                conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            )
            tokens, reusable = await _read_stream(sock, conn, on_text)
            return tokens
        finally:
            if reusable:
                self.idle.append(sock)
            else:
                await sock.aclose()  # closes at once, even when cancelled


async def _read_stream(
    sock: trio.SocketStream, conn: h11.Connection, on_text: OnText
) -> tuple[int, bool]:
    """Read one SSE response; (completion tokens, whether the connection can be reused)."""
    buffer = b""
    pending: list[str] = []
    tokens = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if pending:  # what one read brought goes out as one frame
                await on_text("".join(pending))
                pending.clear()
            conn.receive_data(await sock.receive_some(65536))
        elif isinstance(event, h11.Response):
            if event.status_code != 200:
                raise UpstreamFailed(f"the LLM answered HTTP {event.status_code}")
        elif isinstance(event, h11.Data):
            buffer += event.data
            *lines, buffer = buffer.split(b"\n\n")
            for line in lines:
                payload = line.removeprefix(b"data: ")
                if payload == b"[DONE]" or not payload.startswith(b"{"):
                    continue
                chunk = orjson.loads(payload)
                for choice in chunk.get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        pending.append(text)
                if usage := chunk.get("usage"):
                    tokens = int(usage.get("completion_tokens") or 0)
        elif isinstance(event, h11.EndOfMessage):
            if pending:
                await on_text("".join(pending))
            conn.start_next_cycle()
            return tokens, True
        elif isinstance(event, h11.ConnectionClosed):
            raise UpstreamFailed("the LLM closed the connection mid-answer")


async def relay_chat(
    ws: WebSocketConnection,
    request_id: str,
    message: str,
    upstream: Upstream,
    scopes: dict[str, trio.CancelScope],
) -> None:
    """One chat: the simulator's tokens as ``token`` frames, then ``done`` (or ``error``)."""
    started = trio.current_time()
    first: list[float] = []

    async def on_text(text: str) -> None:
        if not first:
            first.append(trio.current_time())
        await ws.send_message(
            orjson.dumps({"type": "token", "id": request_id, "text": text}).decode()
        )

    tokens, error = 0, None
    with trio.CancelScope() as scope:
        scopes[request_id] = scope
        try:
            tokens = await upstream.stream(message, on_text)
        except (UpstreamFailed, OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            error = str(exc) or type(exc).__name__
        finally:
            del scopes[request_id]
    now = trio.current_time()
    terminal: dict[str, object] = {
        "type": "done",
        "id": request_id,
        "request_id": request_id,
        "finish_reason": "cancelled" if scope.cancelled_caught else "stop",
        "path": "direct",
        "shared": False,
        "cached": False,
        "usage": {"prompt_tokens": 0, "completion_tokens": tokens},
        "timings": {
            "queue_ms": 0,
            "ttft_ms": round((first[0] - started) * 1000, 1) if first else None,
            "total_ms": round((now - started) * 1000, 1),
        },
    }
    if error is not None:
        terminal = {"type": "error", "id": request_id, "code": "upstream_error", "message": error}
    with contextlib.suppress(ConnectionClosed):
        await ws.send_message(orjson.dumps(terminal).decode())


async def handle(request: WebSocketRequest, upstream: Upstream) -> None:
    """Read frames until the client goes; each ``chat`` runs beside the reader."""
    ws = await request.accept()
    scopes: dict[str, trio.CancelScope] = {}
    async with trio.open_nursery() as nursery:
        try:
            while True:
                frame = orjson.loads(await ws.get_message())
                if frame.get("type") == "chat":
                    nursery.start_soon(
                        relay_chat, ws, frame["id"], frame["message"], upstream, scopes
                    )
                elif frame.get("type") == "cancel" and frame.get("id") in scopes:
                    scopes[frame["id"]].cancel()
        except ConnectionClosed:
            nursery.cancel_scope.cancel()


async def serve(host: str, port: int, llm_url: str) -> None:
    handler = functools.partial(handle, upstream=Upstream(llm_url))
    async with trio.open_nursery() as nursery:
        serving = functools.partial(serve_websocket, disconnect_timeout=5)
        server = await nursery.start(serving, handler, host, port, None)
        url = f"http://{host}:{server.port}"
        listening = {"event": "listening", "url": url, "ws_url": f"ws://{host}:{server.port}/v1/ws"}
        print(json.dumps(listening), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--llm-url", required=True, help="the simulator's base URL, …/v1")
    args = parser.parse_args()
    trio.run(serve, args.host, args.port, args.llm_url)


if __name__ == "__main__":
    main()
