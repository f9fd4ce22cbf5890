"""Server CPU per WebSocket message: quart-trio, a raw ASGI app on hypercorn, chatd's own
(issue 13: write to the socket "through the fewest layers ... and choose by numbers").

    python benchmarks/bench_ws_send.py [--messages 20000] [--runs 3] [--quick]

Writes benchmarks/results/ws-send.{json,md} (``--quick`` only prints the report).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from machine import describe_machine, machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
FRAME = b'{"type":"token","id":"r1","text":" word"}'
VARIANTS = ("quart-trio", "hypercorn-asgi", "chatd")


def _server(variant: str, port: int, messages: int) -> None:
    """Serve one connection, send ``messages`` frames, print the CPU they cost
    (``time.process_time``, every thread of this process)."""
    import trio

    text = FRAME.decode()
    result: dict[str, float] = {}
    done = trio.Event()

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        start = time.process_time()
        yield
        result["cpu_s"] = time.process_time() - start
        done.set()

    if variant == "chatd":
        from chatd.server.front import read_request_head
        from chatd.server.websocket import accept

        async def handle(stream: trio.SocketStream) -> None:
            request = await read_request_head(stream)
            assert request is not None
            ws = await accept(stream, request, deflate=False, max_message_bytes=1 << 20)
            assert ws is not None
            with timed():
                for _ in range(messages):
                    ws.send_nowait(FRAME)
                    if ws.buffered > 256 * 1024:  # as the connection waits for room
                        await ws.drain()
                await ws.drain()
            await trio.sleep_forever()

        server = functools.partial(trio.serve_tcp, handle, port)
    else:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.websocket_ping_interval = None

        if variant == "quart-trio":
            from quart import websocket
            from quart_trio import QuartTrio

            app: Any = QuartTrio("bench")

            @app.websocket("/ws")
            async def ws() -> None:
                await websocket.accept()
                with timed():
                    for _ in range(messages):
                        await websocket.send(text)
                await trio.sleep_forever()

        else:

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "lifespan":
                    while (message := await receive())["type"] != "lifespan.shutdown":
                        await send({"type": message["type"] + ".complete"})
                    await send({"type": "lifespan.shutdown.complete"})
                    return
                await receive()
                await send({"type": "websocket.accept"})
                with timed():
                    for _ in range(messages):
                        await send({"type": "websocket.send", "text": text})
                await trio.sleep_forever()

        server = functools.partial(serve, app, config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server)
            print("listening", flush=True)
            await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    print(result["cpu_s"], flush=True)


def _client(port: int, messages: int) -> None:
    """Handshake, then read until every frame's bytes have come (2-byte headers)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 101"), data[:100]
    left = messages * (len(FRAME) + 2) - len(data.split(b"\r\n\r\n", 1)[1])
    while left > 0:
        chunk = sock.recv(1 << 20)
        assert chunk
        left -= len(chunk)
    sock.close()


def run_one(variant: str, messages: int) -> float:
    """µs of server CPU per message, for one run of ``variant``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--messages", str(messages)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdout.readline() == "listening\n"
    _client(port, messages)
    out, _ = server.communicate(timeout=60)
    return float(out.strip().splitlines()[-1]) / messages * 1e6


def markdown(result: dict[str, Any]) -> str:
    medians = result["median_us"]
    rows = "\n".join(
        f"| {v} | {medians[v]:.1f} | {medians[v] / medians['chatd']:.2f}x |" for v in VARIANTS
    )
    return (
        "# Server CPU per WebSocket message\n\n"
        f"{result['messages']} token frames ({len(FRAME)} bytes of JSON) sent as fast as the "
        f"socket takes them, to a client in another process; median of "
        f"{len(result['runs']['chatd'])} alternating runs.\n\n"
        "| server | µs of CPU per message | against chatd's |\n|---|---|---|\n"
        f"{rows}\n\n## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one run")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _server(args.serve, args.port, args.messages)
        return
    if args.quick:
        args.messages, args.runs = 2000, 1
    machine = describe_machine()
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.runs):
        for variant in VARIANTS:
            runs[variant].append(run_one(variant, args.messages))
    medians = {v: statistics.median(xs) for v, xs in runs.items()}
    result = {"messages": args.messages, "runs": runs, "median_us": medians, "machine": machine}
    write_results(None if args.quick else RESULTS, "ws-send", result, markdown(result))


if __name__ == "__main__":
    main()
