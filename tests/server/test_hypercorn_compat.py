"""The hypercorn internals chatd.server.hypercorn_compat relies on, pinned.

If a hypercorn release changes them, these fail before anything subtler
does: update the compat module (and its bound in pyproject.toml) together.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import httpx
import hypercorn
import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from chatd.server.hypercorn_compat import open_http_server


def parameters(callable_: Any) -> list[str]:
    return list(inspect.signature(callable_).parameters)


def test_the_signatures_chatd_calls() -> None:
    """The constructors and methods open_http_server uses, as in hypercorn 0.18."""
    from importlib.metadata import version

    assert version("hypercorn").startswith("0.18."), hypercorn
    assert parameters(TCPServer.__init__) == ["self", "app", "config", "context", "state", "stream"]
    assert parameters(Lifespan.__init__) == ["self", "app", "config", "state"]
    assert parameters(WorkerContext.__init__) == ["self", "max_requests"]
    assert parameters(wrap_app) == ["app", "wsgi_max_body_size", "mode"]
    for method in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, method))
    assert inspect.iscoroutinefunction(WorkerContext(None).terminated.set)


async def test_one_connection_served_with_lifespan_and_idle_close() -> None:
    """An accepted connection is served HTTP by hypercorn; the app's lifespan
    runs around it; setting ``closing`` ends an idle keep-alive connection."""
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                events.append(message["type"])
                await send({"type": "lifespan.startup.complete"})
            events.append("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi " + scope["path"].encode()})

    config = Config()
    config.accesslog = None
    with trio.fail_after(10):
        async with (
            open_http_server(app, config) as (serve, closing),
            trio.open_nursery() as nursery,
        ):
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with httpx.AsyncClient() as http:
                response = await http.get(f"http://127.0.0.1:{port}/there")
            assert response.text == "hi /there"
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /kept HTTP/1.1\r\nhost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
                reply += await stream.receive_some(4096)
            closing.set()  # the kept-alive connection now closes: end of stream
            assert await stream.receive_some(4096) == b""
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert events == ["lifespan.startup", "lifespan.shutdown"]
