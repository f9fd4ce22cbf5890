"""A TCP proxy in front of the simulator that notes when each connection is closed.

``python benchmarks/loadgen/closewatch.py --target HOST:PORT`` listens on a free loopback port
and prints a JSON line with its ``url`` (chatd's ``--llm-url`` then points at it). It copies
bytes both ways untouched; when either side ends a connection it closes both and prints
``{"event": "closed", "at": …, "by": "client", "message": "tell me …"}``: ``at`` is
``time.monotonic()`` (the load generator's clock too), ``by`` is ``client`` (chatd closed it)
or ``target``, ``message`` the last user message of the last request on it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import orjson
import trio

READ_SIZE = 65536
# Only the latest request is kept; a body longer than this is cut and its message not found.
MAX_REQUEST_BYTES = 256 * 1024


class LastRequest:
    """The bytes of the latest request the client sent on one connection."""

    def __init__(self) -> None:
        self.data = b""

    def feed(self, data: bytes) -> None:
        self.data += data
        start = self.data.rfind(b"POST ")
        if start > 0:
            self.data = self.data[start:]
        self.data = self.data[:MAX_REQUEST_BYTES]

    def message(self) -> str | None:
        """The content of the last ``user`` message in the request's JSON body."""
        _head, _, body = self.data.partition(b"\r\n\r\n")
        try:
            messages = orjson.loads(body)["messages"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else None


async def proxy(client: trio.SocketStream, host: str, port: int) -> None:
    """One connection: copy both ways; report which side ended it, and when."""
    seen = LastRequest()
    ended: list[tuple[float, str]] = []
    async with client:
        try:
            target = await trio.open_tcp_stream(host, port)
        except OSError:
            return
        async with target, trio.open_nursery() as nursery:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream, by: str) -> None:
                """Copy ``source`` to ``sink`` until ``source`` ends or either breaks."""
                try:
                    while data := await source.receive_some(READ_SIZE):
                        if by == "client":
                            seen.feed(data)
                        await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                ended.append((time.monotonic(), by))
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, target, "client")
            nursery.start_soon(pump, target, client, "target")
    at, by = ended[0] if ended else (time.monotonic(), "proxy")
    line = {"event": "closed", "at": at, "by": by, "message": seen.message()}
    print(json.dumps(line), flush=True)


async def serve(target: str) -> None:
    host, _, port = target.rpartition(":")
    handler = functools.partial(proxy, host=host, port=int(port))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{bound}"}), flush=True)
    await trio.serve_listeners(handler, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    args = parser.parse_args()
    try:
        trio.run(serve, args.target)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
