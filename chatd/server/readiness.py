"""Readiness that means ready, and the LLM checked at start-up.

``/readyz`` asks the dependencies themselves, not only their breakers: each
LLM endpoint lists its models (``GET /models``), the knowledge base reads
its version, Redis answers a PING, each within ``PROBE_S``, all at once,
and the answers are kept for ``FRESH_S`` so a load balancer polling every
second costs one probe every few. chatd is ready when some LLM endpoint
answers (and its breaker is not open) and the knowledge base does; Redis
down is reported, not fatal (cache, sessions and limits fall back to
memory).

At start-up (:func:`check_llm_at_start`), a configured LLM URL is checked
the same way: a URL without ``/v1`` earns a hint, an endpoint that does not
answer a warning (chatd starts anyway: it may come up later), and when
``llm.model`` is left at its default the model is the one the endpoint
lists, if it lists one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

from chatd.config import Settings
from chatd.config.settings import LLMSettings
from chatd.exceptions import ChatdError
from chatd.pipeline import Pipeline
from chatd.pipeline.upstream import Upstream

__all__ = ["FRESH_S", "PROBE_S", "Readiness", "check_llm_at_start"]

log = structlog.get_logger("chatd.server")

PROBE_S = 1.0
FRESH_S = 5.0
START_PROBE_S = 3.0


@attrs.define(eq=False)
class Readiness:
    """The last probe of each dependency: ``None`` when it answered, else why not."""

    pipeline: Pipeline
    results: dict[str, str | None] = attrs.field(factory=dict)
    checked_at: float = -math.inf
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def probe(self) -> dict[str, str | None]:
        """Each dependency's state, probed again if the last answers are stale."""
        async with self._lock:
            if trio.current_time() - self.checked_at < FRESH_S:
                return self.results
            probes: dict[str, Callable[[], Awaitable[Any]]] = {}
            llm = self.pipeline.llm
            if isinstance(llm, Upstream):
                for endpoint in llm.endpoints:
                    probes[endpoint.breaker.name] = functools.partial(
                        endpoint.client.models, PROBE_S
                    )
            if self.pipeline.kb is not None:
                probes["kb"] = self.pipeline.kb.version
            if self.pipeline.redis is not None:
                redis = self.pipeline.redis
                probes["redis"] = lambda: redis.call(lambda r: r.ping())
            results: dict[str, str | None] = {}

            async def run(name: str, probe: Callable[[], Awaitable[Any]]) -> None:
                with trio.move_on_after(PROBE_S) as scope:
                    try:
                        await probe()
                    except ChatdError as exc:
                        results[name] = exc.message
                        return
                results[name] = (
                    f"no answer within {PROBE_S:g} s" if scope.cancelled_caught else None
                )

            async with trio.open_nursery() as nursery:
                for name, probe in probes.items():
                    nursery.start_soon(run, name, probe)
            self.results, self.checked_at = results, trio.current_time()
            return results

    async def status(self) -> str:
        """``ready``, or what is not: ``llm unavailable``, ``kb unavailable``."""
        results = await self.probe()
        breakers = self.pipeline.breakers
        llm = [n for n in breakers if n.startswith("llm")]
        usable = [n for n in llm if breakers[n].state != "open" and results.get(n) is None]
        if llm and not usable:
            return "llm unavailable"
        if results.get("kb") is not None:
            return "kb unavailable"
        return "ready"


async def check_llm_at_start(pipeline: Pipeline, settings: Settings) -> None:
    """Say what is wrong with a configured LLM URL, and take the model it
    serves when ``llm.model`` was left at its default (warnings only)."""
    url = settings.llm.url
    llm = pipeline.llm
    if url is None or not isinstance(llm, Upstream):
        return
    if not url.rstrip("/").endswith("/v1"):
        log.warning(
            "the LLM URL does not end in /v1, as OpenAI-style base URLs do: "
            f"if calls fail with HTTP 404, try {url.rstrip('/')}/v1",
            llm_url=url,
            startup=True,
        )
    client = llm.endpoints[0].client
    try:
        models = await client.models(START_PROBE_S)
    except ChatdError as exc:
        log.warning(
            "the LLM does not answer yet: chats fail until it does",
            llm_url=url,
            error=exc.message,
            detail=exc.detail,
            startup=True,
        )
        return
    default = attrs.fields(LLMSettings).model.default
    if settings.llm.model != default or settings.llm.model in models:
        return
    if len(models) == 1:
        client.model = models[0]
        log.info("using the LLM's model", model=models[0], startup=True)
    elif models:
        log.warning(
            f"llm.model is not set and the LLM serves {len(models)} models: set llm.model "
            f"(it serves {', '.join(models[:5])}{', ...' if len(models) > 5 else ''})",
            startup=True,
        )
