"""hypercorn's HTTP/1.1 and HTTP/2 server, for the connections the front door hands it.

chatd accepts connections itself (:mod:`chatd.server.front`): WebSockets to
``/v1/ws`` are its own, everything else goes to hypercorn and the quart app.
hypercorn's public ``serve()`` owns its listening sockets, so handing it one
connection uses the classes ``serve()`` is made of, as hypercorn 0.18's
``hypercorn.trio.run.worker_serve`` uses them: ``TCPServer`` per connection,
one ``WorkerContext`` and ``Lifespan`` per server. This module is the only
place that imports them; checked against hypercorn 0.18.0 (pyproject.toml
bounds it below 0.19), and ``tests/server/test_hypercorn_compat.py`` fails
when their signatures change.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

__all__ = ["ServeHTTP", "open_http_server"]

ServeHTTP = Callable[[trio.SocketStream], Awaitable[None]]
"""Serve one accepted connection's HTTP until it closes."""


@asynccontextmanager
async def open_http_server(app: Any, config: Config) -> AsyncIterator[tuple[ServeHTTP, trio.Event]]:
    """The app's lifespan around the block; yields how to serve one connection,
    and the event that, once set, closes idle keep-alive connections (a drain)."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    connection_state = ConnectionState(state.copy())
    closing = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        await TCPServer(wrapped, config, context, connection_state, stream)  # type: ignore[arg-type]

    async def close_idle_when_told() -> None:
        await closing.wait()
        await context.terminated.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        nursery.start_soon(close_idle_when_told)
        try:
            yield serve, closing
        finally:
            with trio.move_on_after(config.shutdown_timeout) as cleanup:
                cleanup.shield = True
                # Cancelled from outside, the lifespan task has ended already.
                with contextlib.suppress(trio.ClosedResourceError):
                    await lifespan.wait_for_shutdown()
            nursery.cancel_scope.cancel()
