"""The quart-trio application: routes, credentials, and the state they share.

``/v1/ws`` hands each connection to :class:`~chatd.server.connection.Connection`;
``POST /v1/chat`` is in :mod:`chatd.server.http_chat`; ``/healthz`` and
``/readyz`` report on the process.
"""

from __future__ import annotations

from typing import Any

import attrs
import structlog
import trio
from quart import Response, websocket
from quart_trio import QuartTrio

from chatd.pipeline import Pipeline
from chatd.resilience.janitor import Reap
from chatd.server.auth import identify
from chatd.server.connection import Connection
from chatd.server.http_chat import register_http_chat

__all__ = ["AppState", "create_app"]


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
    # Streamed answers may last minutes; Quart's 60 s default would cut them.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 30
    settings = state.pipeline.settings

    @app.websocket("/v1/ws")
    async def chat_socket() -> None:
        client, ok = identify(
            settings.server.api_keys,
            websocket.headers.get("Authorization"),
            websocket.args.get("api_key"),
            websocket.remote_addr or "unknown",
        )
        await websocket.accept()
        connection = Connection(state.pipeline, client, authorized=ok, draining=state.drain_started)
        state.connections.add(connection)
        try:
            # Tasks inherit a copy of the context when spawned: every line of
            # this connection's requests carries its id.
            with structlog.contextvars.bound_contextvars(connection_id=connection.id):
                await connection.serve(_QuartTransport())
        finally:
            state.connections.discard(connection)

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
