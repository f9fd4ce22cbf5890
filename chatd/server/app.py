"""The quart-trio application: its routes and the state they share."""

from __future__ import annotations

from typing import Any

import attrs
from quart_trio import QuartTrio

__all__ = ["AppState", "create_app"]


@attrs.define
class AppState:
    """What the routes read: whether we drain, and where the LLM is."""

    llm_url: str
    llm_simulated: bool
    draining: bool = False


def create_app(state: AppState) -> QuartTrio:
    """The app; routes close over ``state``."""
    app = QuartTrio("chatd")
    # Streamed answers may last minutes; Quart's 60 s default would cut them.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 30

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int]:
        body = {
            "status": "draining" if state.draining else "ready",
            "dependencies": {
                "llm": {"url": state.llm_url, "simulated": state.llm_simulated},
            },
        }
        return body, 503 if state.draining else 200

    return app
