"""The LLM client: OpenAI chat completions over httpx, streamed as SSE.

Every phase of a call has its own deadline, all on trio's clock: connect
(httpx), time to first token (from sending the request to the first text or
tool-call delta), the gap between deltas, and the whole call. A breach raises
:class:`~chatd.exceptions.UpstreamTimeout` naming the phase. Every httpx error
is translated here; none escapes this module. Leaving the ``stream()`` block
early, by cancellation or by ``break``, closes the upstream connection at once,
so the provider stops generating.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import attrs
import certifi
import httpx
import orjson
import trio

from chatd.config import LLMSettings, LLMTimeouts
from chatd.exceptions import (
    DeadlineExceeded,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chatd.llm.stream import LLMStream
from chatd.llm.transport import TrioTransport
from chatd.llm.types import ChatRequest, Completion
from chatd.redaction import redact, redact_url

__all__ = ["LLMClient", "LLMStream", "open_llm_client"]

_ERROR_BODY_LIMIT = 64 * 1024
_BODY_LIMIT = 16 * 1024 * 1024
_CLOSE_TIMEOUT_S = 1.0


def _retry_after_ms(value: str | None) -> int | None:
    """``Retry-After`` as milliseconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None  # a malformed hint is no hint, not an error
    return max(0, int((when.timestamp() - time.time()) * 1000))


def _error_message(body: bytes) -> str:
    """The provider's own words from an error body, JSON or not."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty body)"
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return str(err)[:300]


@attrs.define
class LLMClient:
    """Calls one OpenAI-compatible endpoint. Make it with :func:`open_llm_client`."""

    base_url: str
    model: str
    timeouts: LLMTimeouts
    _send_http: Callable[[httpx.Request], Awaitable[httpx.Response]]
    _url: httpx.URL
    _headers: httpx.Headers
    coalesce_s: float = 0.0
    """See :class:`LLMStream`: pieces of a fast stream are read together."""
    _timeout: dict[str, float | None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Reads are bounded by our own per-phase deadlines on trio's clock.
        connect = self.timeouts.connect_s
        self._timeout = {"connect": connect, "read": None, "write": connect, "pool": None}

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMStream]:
        """Start a streamed call; the block's events end with a ``Completion``."""
        async with self._call(request, stream=True) as events:
            yield events

    async def complete(self, request: ChatRequest) -> Completion:
        """One call, not streamed: the whole completion."""
        async with self._call(request, stream=False) as events:
            async for event in events:
                if isinstance(event, Completion):
                    return event
        raise UpstreamProtocolError("LLM answer had no completion")  # pragma: no cover

    async def models(self, within_s: float) -> list[str]:
        """The model ids the endpoint lists (``GET /models``), within
        ``within_s``: the cheap call that says it is there and answering."""
        path = self._url.path.removesuffix("/chat/completions") + "/models"
        request = httpx.Request(
            "GET",
            self._url.copy_with(path=path),
            headers=self._headers,
            extensions={"timeout": self._timeout},
        )
        with trio.move_on_after(within_s) as scope:
            response = await self._send(request)
            try:
                if response.status_code >= 400:
                    await self._raise_for_status(response)
                body = await self._read(response)
            finally:
                with trio.move_on_after(_CLOSE_TIMEOUT_S) as cleanup:
                    cleanup.shield = True
                    await response.aclose()
        if scope.cancelled_caught:
            raise UpstreamTimeout(f"the LLM listed no models within {within_s:g} s", phase="ttft")
        try:
            listed = orjson.loads(body).get("data") or []
            return [str(m["id"]) for m in listed if isinstance(m, dict) and "id" in m]
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise UpstreamProtocolError("the LLM's model list is not OpenAI's shape") from exc

    @asynccontextmanager
    async def _call(self, request: ChatRequest, *, stream: bool) -> AsyncIterator[LLMStream]:
        """The call's block runs inside its deadline scope: a deadline that
        fires cancels the block, and leaves it as :class:`UpstreamTimeout`."""
        started = trio.current_time()
        timeouts = self.timeouts
        total_deadline = started + timeouts.total_s
        # Headers of a streamed answer come with its first token; of a plain one, at the end.
        first_deadline = (
            min(total_deadline, started + timeouts.ttft_s) if stream else total_deadline
        )
        body = orjson.dumps(request.to_json(self.model, stream=stream))
        http_request = httpx.Request(
            "POST",
            self._url,
            headers=self._headers,
            content=body,
            extensions={"timeout": self._timeout},
        )
        response: httpx.Response | None = None
        events: LLMStream | None = None
        with trio.CancelScope(deadline=first_deadline) as scope:
            try:
                response = await self._send(http_request)
                if response.status_code >= 400:
                    await self._raise_for_status(response)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" in content_type:
                    events = LLMStream(
                        response,
                        timeouts,
                        started,
                        total_deadline,
                        scope=scope,
                        coalesce_s=self.coalesce_s,
                        phase="ttft" if first_deadline < total_deadline else "total",
                    )
                elif "json" in content_type:
                    events = LLMStream.of_completion(response, timeouts, await self._read(response))
                else:
                    raise UpstreamProtocolError(
                        f"LLM answered with content-type {content_type!r}, not an event stream"
                    )
                yield events
                # Left after the completion (most callers stop there): the body's
                # last bytes are on their way, and reading them keeps the
                # connection for the next call instead of closing it.
                if events.completion is not None:
                    await events.read_to_end()
            finally:
                if response is not None:
                    with trio.move_on_after(_CLOSE_TIMEOUT_S) as cleanup:
                        cleanup.shield = True
                        if events is not None:
                            await events.aclose()
                        await response.aclose()
        if scope.cancelled_caught:
            phase = events.expired_phase if events is not None and events.scope is scope else None
            if phase is None:
                phase = "ttft" if first_deadline < total_deadline else "total"
            if phase == "reader":
                raise DeadlineExceeded(
                    f"the LLM stream waited over {timeouts.gap_s:g} s for its reader"
                )
            limit = {"ttft": timeouts.ttft_s, "gap": timeouts.gap_s, "total": timeouts.total_s}
            raise UpstreamTimeout(f"LLM {phase} timeout after {limit[phase]:g} s", phase=phase)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._send_http(request)
            response.request = request
            return response
        except httpx.ConnectTimeout as exc:
            raise UpstreamTimeout(
                f"LLM connect timeout after {self.timeouts.connect_s:g} s", phase="connect"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"LLM timed out: {type(exc).__name__}", phase="ttft") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                "cannot reach the LLM",
                detail=f"{redact_url(str(self.base_url))}: {exc or type(exc).__name__}",
            ) from exc

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > _BODY_LIMIT:
                    raise UpstreamProtocolError("LLM answer is too large")
            return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise UpstreamProtocolError(f"LLM connection broke: {exc}") from exc

    async def _raise_for_status(self, response: httpx.Response) -> None:
        try:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status alone is still worth reporting
        text = body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
        status = response.status_code
        # The provider's own words may quote credentials or the prompt: they
        # go to the log (redacted), and users read the status alone.
        message = f"LLM answered HTTP {status}"
        detail = redact(_error_message(body))
        if status in (429, 503):
            raise UpstreamRefused(
                message,
                status=status,
                body=text,
                retry_after_ms=_retry_after_ms(response.headers.get("retry-after")),
                detail=detail,
            )
        raise UpstreamHTTPError(message, status=status, body=text, detail=detail)


@asynccontextmanager
async def open_llm_client(
    settings: LLMSettings,
    *,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[LLMClient]:
    """An :class:`LLMClient` for ``base_url`` (default ``settings.url``), closed on exit."""
    url = base_url or settings.url
    if not url:
        raise UpstreamUnavailable("no LLM URL configured")
    headers: Mapping[str, str] = {
        "content-type": "application/json",
        "accept": "text/event-stream",
        **({"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}),
        **settings.extra_headers,
    }
    timeouts = settings.timeouts
    endpoint = httpx.URL(url.rstrip("/") + "/chat/completions")
    async with contextlib.AsyncExitStack() as stack:
        send: Callable[[httpx.Request], Awaitable[httpx.Response]]
        if transport is None and _proxied(endpoint):
            # httpx's own client and transport know the proxy settings
            http = await stack.enter_async_context(httpx.AsyncClient())
            send = functools.partial(http.send, stream=True)
        else:
            if transport is None:
                # One TLS context for the pool: each connection would make its own (~1 MB).
                tls = ssl.create_default_context(cafile=certifi.where())
                transport = TrioTransport(verify=tls, max_connections=settings.max_connections)
            # Straight to the transport: httpx's client would merge the URL and
            # headers, run the auth and redirect flows and read cookies on every
            # call (measured ~9% of chatd's CPU in short chats), none of it used.
            await stack.enter_async_context(transport)
            send = transport.handle_async_request
        yield LLMClient(
            url,
            settings.model,
            timeouts,
            send,
            endpoint,
            httpx.Headers(headers),
            coalesce_s=settings.coalesce_ms / 1000,
        )


def _proxied(url: httpx.URL) -> bool:
    """Whether the environment (``HTTPS_PROXY`` and the like, less ``NO_PROXY``)
    sends ``url`` through a proxy, as httpx's client would."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)
