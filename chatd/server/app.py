"""The quart-trio application: routes, credentials, and the state they share.

``/v1/ws`` hands each connection to :class:`~chatd.server.connection.Connection`,
straight from hypercorn's ASGI messages (:func:`_serve_chat_sockets`);
``POST /v1/chat`` is in :mod:`chatd.server.http_chat`; ``/healthz`` and
``/readyz`` report on the process.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import attrs
import structlog
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope
from quart import Response, websocket
from quart_trio import QuartTrio

from chatd.pipeline import Pipeline
from chatd.resilience.janitor import Reap
from chatd.server.auth import identify
from chatd.server.connection import Connection, FrameTransport
from chatd.server.http_chat import register_http_chat

__all__ = ["WS_PATH", "AppState", "create_app"]

log = structlog.get_logger("chatd.server")

WS_PATH = "/v1/ws"

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Coroutine[Any, Any, None]]


@attrs.define
class AppState:
    """What the routes read: the pipeline, the connections, whether we drain."""

    pipeline: Pipeline
    llm_url: str
    llm_simulated: bool
    connections: set[Connection] = attrs.field(factory=set)
    drain_started: trio.Event = attrs.field(factory=trio.Event)

    @property
    def draining(self) -> bool:
        """True once a drain began: new requests are refused."""
        return self.pipeline.draining

    def start_drain(self) -> None:
        """Refuse new requests; each connection closes (1001) once it is idle."""
        self.pipeline.draining = True
        self.drain_started.set()
        for connection in self.connections:
            connection.drain()

    def sweep_connections(self) -> list[Reap]:
        """Reap clients that stopped reading and connections idle too long."""
        limits = self.pipeline.settings.janitor
        now = trio.current_time()
        reaps = []
        for connection in list(self.connections):
            if connection.reaped is not None:
                continue
            started = connection.send_started
            if started is not None and now - started > limits.stalled_client_s:
                reason = "client stopped reading"
            elif (
                not connection.in_flight
                and now - connection.last_activity > limits.idle_connection_s
            ):
                reason = "idle"
            else:
                continue
            connection.reap(reason)
            reaps.append(Reap("connection", connection.id, reason))
        return reaps


@attrs.define(eq=False)
class _ASGITransport:
    """One WebSocket's ASGI messages as a :class:`~chatd.server.connection.FrameTransport`.

    Frames come straight from hypercorn's queue. quart-trio would add, to every
    connection, a second queue with a task to fill it, a nursery with a second
    task to run the handler, and a websocket object with its contexts: about
    14 KiB of each idle connection (RSS), for nothing chatd uses.
    """

    _receive: ASGIReceiveCallable
    _send: ASGISendCallable
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Around the connection; cancelled when the peer goes away."""
    closed: bool = False

    async def receive(self) -> str | bytes:
        message = await self._receive()
        if message["type"] == "websocket.receive":
            data = message["bytes"]
            return data if data is not None else message["text"] or ""
        self.scope.cancel()  # websocket.disconnect: the caller is cancelled, as quart-trio did
        await trio.lowlevel.checkpoint()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, frame: str) -> None:
        await self._send({"type": "websocket.send", "bytes": None, "text": frame})

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _identify(api_keys: list[str], scope: WebsocketScope) -> tuple[str, bool]:
    """:func:`~chatd.server.auth.identify` from the handshake, as quart would read it:
    the first ``Authorization`` header, the first ``api_key`` argument."""
    authorization = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), None)
    query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
    return identify(
        api_keys,
        None if authorization is None else authorization.decode("latin1"),
        next((v for k, v in query if k == "api_key"), None),
        (scope.get("client") or ("<local>",))[0] or "unknown",
    )


def _serve_chat_sockets(state: AppState, app: ASGIApp) -> ASGIApp:
    """The ASGI app: WebSockets to ``/v1/ws`` are served here, the rest by ``app``
    (quart's, which keeps a ``/v1/ws`` route of its own for the cases left to it:
    a plain GET of that path is answered 400, and a ``root_path`` is honoured)."""
    api_keys = state.pipeline.settings.server.api_keys

    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "websocket" or scope["path"] != WS_PATH or scope.get("root_path"):
            await app(scope, receive, send)
            return
        if (await receive())["type"] != "websocket.connect":
            return  # gone before the handshake
        client, ok = _identify(api_keys, scope)
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        transport = _ASGITransport(receive, send)
        try:
            with transport.scope:
                await _serve_connection(state, transport, client, ok)
        except Exception:
            log.exception("websocket handler failed")
            await transport.close(1011, "internal error")
        if not transport.closed:  # reaped by the janitor: quart closed these 1000 too
            await transport.close(1000, "")

    return asgi_app


async def _serve_connection(
    state: AppState, transport: FrameTransport, client: str, authorized: bool
) -> None:
    connection = Connection(
        state.pipeline, client, authorized=authorized, draining=state.drain_started
    )
    state.connections.add(connection)
    # The calling task is this connection's own, and so is its copy of the
    # context (no need to unbind): every line of its requests carries its id.
    structlog.contextvars.bind_contextvars(connection_id=connection.id)
    try:
        await connection.serve(transport)
    finally:
        state.connections.discard(connection)


class _QuartTransport:
    """quart-trio's websocket as a :class:`~chatd.server.connection.FrameTransport`."""

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, frame: str) -> None:
        await websocket.send(frame)

    async def close(self, code: int, reason: str) -> None:
        await websocket.close(code, reason)


def create_app(state: AppState) -> QuartTrio:
    """The app; routes close over ``state``."""
    app = QuartTrio("chatd")
    app.asgi_app = _serve_chat_sockets(state, app.asgi_app)  # type: ignore[method-assign,assignment]
    # Streamed answers may last minutes; Quart's 60 s default would cut them.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 30
    settings = state.pipeline.settings

    @app.websocket(WS_PATH)
    async def chat_socket() -> None:  # only what _serve_chat_sockets leaves to quart
        client, ok = identify(
            settings.server.api_keys,
            websocket.headers.get("Authorization"),
            websocket.args.get("api_key"),
            websocket.remote_addr or "unknown",
        )
        await websocket.accept()
        await _serve_connection(state, _QuartTransport(), client, ok)

    register_http_chat(app, state.pipeline)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.pipeline.metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int]:
        breakers = state.pipeline.breakers
        llm_down = all(b.state == "open" for name, b in breakers.items() if name.startswith("llm"))
        status = "draining" if state.draining else "llm unavailable" if llm_down else "ready"
        dependencies: dict[str, Any] = {
            name: {
                "breaker": b.state,
                "retry_after_ms": b.retry_after_ms() if b.state == "open" else None,
            }
            for name, b in breakers.items()
        }
        dependencies.setdefault("llm", {}).update(url=state.llm_url, simulated=state.llm_simulated)
        body = {
            "status": status,
            "connections": len(state.connections),
            "dependencies": dependencies,
        }
        return body, 200 if status == "ready" else 503

    return app
