"""The quart-trio application: routes, credentials, and the state they share.

:func:`serve_websocket` hands each ``/v1/ws`` connection (accepted by the
front door, :mod:`chatd.server.front`) to
:class:`~chatd.server.connection.Connection`; the quart app serves HTTP:
``POST /v1/chat`` (:mod:`chatd.server.http_chat`), ``/healthz``, ``/readyz``
and ``/metrics``.
"""

from __future__ import annotations

import collections
import importlib.resources
from typing import Any
from urllib.parse import parse_qsl

import attrs
import h11
import orjson
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from chatd.pipeline import Pipeline, encode
from chatd.pipeline.admission import is_local
from chatd.pipeline.events import Error
from chatd.redaction import redact_url
from chatd.resilience.janitor import Reap
from chatd.resilience.supervisor import Supervisor
from chatd.server.auth import client_address, identify, key_matches, supplied_key
from chatd.server.connection import Connection
from chatd.server.http_chat import register_http_chat
from chatd.server.origins import host_allowed, origin_allowed
from chatd.server.readiness import Readiness
from chatd.server.websocket import accept, refuse

__all__ = ["WS_PATH", "AppState", "create_app", "serve_websocket"]

log = structlog.get_logger("chatd.server")

WS_PATH = "/v1/ws"


@attrs.define
class AppState:
    """What the routes read: the pipeline, the connections, whether we drain."""

    pipeline: Pipeline
    llm_url: str
    llm_simulated: bool
    connections: set[Connection] = attrs.field(factory=set)
    clients: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """Open WebSockets by client, for ``limits.max_connections_per_client``."""
    drain_started: trio.Event = attrs.field(factory=trio.Event)
    supervisor: Supervisor = attrs.field(factory=Supervisor)
    """Told when a connection's reader or writer fails (logged and counted)."""
    readiness: Readiness = attrs.field(
        default=attrs.Factory(lambda self: Readiness(self.pipeline), takes_self=True)
    )
    """The dependencies as last probed, for ``/readyz``."""

    @property
    def draining(self) -> bool:
        """True once a drain began: new requests are refused."""
        return self.pipeline.draining

    def start_drain(self) -> None:
        """Refuse new requests; each connection closes (1001) once it is idle."""
        self.pipeline.start_draining()
        self.drain_started.set()
        for connection in self.connections:
            connection.drain()

    def sweep_connections(self) -> list[Reap]:
        """Reap clients that stopped reading, stopped answering pings, or sat
        idle too long; ping the quiet ones; count the frames sent."""
        limits = self.pipeline.settings.janitor
        ping_interval = self.pipeline.settings.server.websocket_ping_interval_s
        now = trio.current_time()
        reaps = []
        for connection in list(self.connections):
            connection.count_frames()
            if connection.reaped is not None:
                continue
            started = connection.send_started
            if started is not None and now - started > limits.stalled_client_s:
                reason: str | None = "client stopped reading"
            elif (
                not connection.in_flight
                and now - connection.last_activity > limits.idle_connection_s
            ):
                reason = "idle"
            else:
                reason = connection.keep_alive(now, ping_interval)
            if reason is None:
                continue
            connection.reap(reason)
            reaps.append(Reap("connection", connection.id, reason))
        return reaps


def _identify(api_keys: list[str], request: h11.Request, peer: str) -> tuple[str, bool]:
    """:func:`~chatd.server.auth.identify` from the handshake: the first
    ``Authorization`` header, the first ``api_key`` argument."""
    authorization = next((v for k, v in request.headers if k == b"authorization"), None)
    query = parse_qsl(request.target.partition(b"?")[2].decode("latin1"), keep_blank_values=True)
    return identify(
        api_keys,
        None if authorization is None else authorization.decode("latin1"),
        next((v for k, v in query if k == "api_key"), None),
        peer,
    )


def _header(request: h11.Request, name: bytes) -> str | None:
    value = next((v for k, v in request.headers if k == name), None)
    return None if value is None else value.decode("latin1")


async def serve_websocket(state: AppState, stream: trio.SocketStream, request: h11.Request) -> None:
    """Serve one ``/v1/ws`` connection whose upgrade request has been read:
    refused (403) unless its page's origin and the host it names are allowed
    (:mod:`chatd.server.origins`). With API keys set and no good one, the
    client hears an ``unauthorized`` error and the close code 1008 at once
    (a browser cannot read a refused upgrade's status)."""
    settings = state.pipeline.settings
    host = _header(request, b"host")
    if not host_allowed(host, settings.server.host):
        await refuse(stream, 403, b"Forbidden: this server answers to a loopback name only")
        return
    if not origin_allowed(_header(request, b"origin"), host, settings.server.allowed_origins):
        await refuse(stream, 403, b"Forbidden: this page's origin is not allowed")
        return
    try:
        peer = stream.socket.getpeername()[0]
    except OSError:
        peer = "unknown"
    peer = client_address(
        peer or "unknown", _header(request, b"x-forwarded-for"), settings.server.trusted_proxies
    )
    client, ok = _identify(settings.server.api_keys, request, peer)
    websocket = await accept(
        stream,
        request,
        deflate=settings.server.websocket_deflate,
        # Frames past limits.max_frame_bytes get a too_large error; far past it,
        # the socket is closed (1009) rather than buffering them.
        max_message_bytes=max(4 * settings.limits.max_frame_bytes, 1 << 20),
    )
    if websocket is None:
        return
    if not ok:
        log.info("connection refused", code="unauthorized", client=client)
        websocket.send_nowait(encode(Error("unauthorized", "missing or wrong API key"), None))
        await websocket.close(1008, "missing or wrong API key")
        return
    limits = settings.limits
    if len(state.connections) >= limits.max_connections or (
        state.clients[client] >= limits.max_connections_per_client and not is_local(client)
    ):
        log.info("connection refused", code="overloaded", client=client)
        refusal = Error("overloaded", "too many connections; try again later", 1000)
        websocket.send_nowait(encode(refusal, None))
        await websocket.close(1013, "too many connections")
        return
    connection = Connection(state.pipeline, client, draining=state.drain_started)
    state.connections.add(connection)
    state.clients[client] += 1
    # The calling task is this connection's own, and so is its copy of the
    # context (no need to unbind): every line of its requests carries its id.
    structlog.contextvars.bind_contextvars(connection_id=connection.id)
    code, reason = 1000, ""
    try:
        await connection.serve(websocket)
    except Exception as exc:  # this connection's fault: it ends, the others go on
        task = "connection_writer" if connection.writer_failed else "connection_reader"
        state.supervisor.failed(task, exc)
        code, reason = 1011, "internal error"
    finally:
        state.connections.discard(connection)
        state.clients[client] -= 1
        if not state.clients[client]:
            del state.clients[client]
    if connection.reaped == "client stopped reading":
        websocket.aborted()  # it would not read a close frame either
    elif connection.draining.is_set() and connection.reaped is None:
        await websocket.close(1001, "server shutting down")
    else:
        await websocket.close(code, reason)


_WEB_FILES = {
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
}
_WEB_HEADERS = {
    # The page's own scripts and styles only, its WebSocket back to this server.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def register_web_page(app: QuartTrio) -> None:
    """The web chat (``chatd/web``): ``/`` and its two files under ``/web/``."""
    web = importlib.resources.files("chatd").joinpath("web")
    files = {name: web.joinpath(name).read_bytes() for name in (*_WEB_FILES, "index.html")}

    @app.get("/")
    async def index() -> Response:
        page = files["index.html"]
        return Response(page, content_type="text/html; charset=utf-8", headers=_WEB_HEADERS)

    @app.get("/web/<name>")
    async def web_file(name: str) -> Response:
        if name not in _WEB_FILES:
            return Response("not found\n", status=404, content_type="text/plain")
        return Response(files[name], content_type=_WEB_FILES[name], headers=_WEB_HEADERS)


def create_app(state: AppState) -> QuartTrio:
    """The app; routes close over ``state``."""
    app = QuartTrio("chatd")
    # Streamed answers may last minutes; Quart's 60 s default would cut them.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 30

    @app.get(WS_PATH)
    async def chat_socket_without_upgrade() -> tuple[str, int]:
        # WebSockets to this path never reach quart (chatd.server.front serves them).
        return "a WebSocket upgrade is required here\n", 400

    register_http_chat(app, state.pipeline)
    register_web_page(app)

    def operator() -> bool:
        """Whether this request may see operators' details: yes when no keys are
        configured at all; else with one of ``server.operator_keys``."""
        server = state.pipeline.settings.server
        if not server.api_keys and not server.operator_keys:
            return True
        supplied = supplied_key(request.headers.get("Authorization"), None)
        return key_matches(supplied, server.operator_keys)

    @app.get("/metrics")
    async def metrics() -> Response:
        if not operator():
            body = orjson.dumps(
                {"error": {"code": "unauthorized", "message": "operator key needed"}}
            )
            return Response(body, status=401, content_type="application/json")
        body, content_type = state.pipeline.metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int]:
        breakers = state.pipeline.breakers
        status = "draining" if state.draining else await state.readiness.status()
        probed = state.readiness.results
        dependencies: dict[str, Any] = {
            name: {
                "breaker": b.state,
                "retry_after_ms": b.retry_after_ms() if b.state == "open" else None,
                "answers": name in probed and probed[name] is None,
                "error": probed.get(name),
            }
            for name, b in breakers.items()
        }
        dependencies.setdefault("llm", {}).update(
            url=redact_url(state.llm_url), simulated=state.llm_simulated
        )
        body: dict[str, Any] = {"status": status}
        if operator():
            body.update(connections=len(state.connections), dependencies=dependencies)
        return body, 200 if status == "ready" else 503

    return app
