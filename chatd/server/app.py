"""The quart-trio application: routes, credentials, and the state they share.

``/v1/ws`` hands each connection to :class:`~chatd.server.connection.Connection`;
``POST /v1/chat`` is in :mod:`chatd.server.http_chat`; ``/healthz`` and
``/readyz`` report on the process.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import websocket
from quart_trio import QuartTrio

from chatd.pipeline import Pipeline
from chatd.server.auth import identify
from chatd.server.connection import Connection
from chatd.server.http_chat import register_http_chat

__all__ = ["AppState", "create_app"]


@attrs.define
class AppState:
    """What the routes read: the pipeline, whether we drain, where the LLM is."""

    pipeline: Pipeline
    llm_url: str
    llm_simulated: bool
    connections: int = 0

    @property
    def draining(self) -> bool:
        """True once a drain began: new requests are refused."""
        return self.pipeline.draining


class _QuartTransport:
    """quart-trio's websocket as a :class:`~chatd.server.connection.FrameTransport`."""

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, frame: str) -> None:
        await websocket.send(frame)


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
        state.connections += 1
        try:
            await Connection(state.pipeline, client, authorized=ok).serve(_QuartTransport())
        finally:
            state.connections -= 1

    register_http_chat(app, state.pipeline)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int]:
        body = {
            "status": "draining" if state.draining else "ready",
            "connections": state.connections,
            "dependencies": {
                "llm": {"url": state.llm_url, "simulated": state.llm_simulated},
            },
        }
        return body, 503 if state.draining else 200

    return app
