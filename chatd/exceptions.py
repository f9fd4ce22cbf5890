"""The one exception tree of chatd, split by cause.

Every failure that crosses a module boundary is one of these; third-party
errors (httpx, redis, sqlite) are translated where they are caught, with
``raise ... from exc``. Each class maps to exactly one protocol error code
(protocol.md §1) through its ``code`` attribute, so the mapping lives here::

    ChatdError                      internal
    ├── ConfigError                 (start-up only, never on the wire)
    ├── ServerFailed                (a long-lived task gave up; never on the wire)
    ├── ToolFailed                  (a tool_end with ok false, never terminal)
    ├── ClientError                 bad_request
    │   ├── TooLarge                too_large
    │   ├── Unauthorized            unauthorized
    │   └── RateLimited             rate_limited       (retry_after_ms)
    ├── Overloaded                  overloaded         (retry_after_ms)
    ├── ShuttingDown                shutting_down      (retry_after_ms)
    ├── UpstreamUnavailable         upstream_unavailable (retry_after_ms)
    │   ├── BreakerOpen
    │   └── UpstreamRefused         (429 or 503: status and body kept)
    ├── UpstreamError               upstream_error
    │   ├── UpstreamHTTPError       (status, provider's error body kept)
    │   └── UpstreamProtocolError   (malformed stream)
    └── DeadlineExceeded            timeout
        └── UpstreamTimeout         (phase: connect, ttft, gap, total)

Where an error outlives the call that raised it (a shared flight's end, read
by every subscriber here and on other instances), it travels as data: a
:class:`Failure` (code, message, retry hint, operators' detail, and the HTTP
status of its code). :meth:`Failure.of` turns an exception into one and
:meth:`Failure.exception` raises a fresh exception of its code's class from
it, here and nowhere else.
"""

from __future__ import annotations

from typing import ClassVar

import attrs


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class ChatdError(Exception):
    """Base of every error chatd raises on purpose."""

    code: ClassVar[str] = "internal"
    retry_after_ms: int | None = None
    detail: str | None = None
    """For operators only (logs, traces): what ``message``, which users read, leaves out."""

    def __init__(
        self, message: str, *, retry_after_ms: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if retry_after_ms is not None:
            self.retry_after_ms = retry_after_ms
        if detail is not None:
            self.detail = detail


class ConfigError(ChatdError):
    """A configuration key has a bad value; start-up stops with this one line."""


class ServerFailed(ChatdError):
    """The server stopped for a failure, and ``chatd serve`` exits 1: a
    long-lived task failed and could not be restarted (the server drained
    first), or a worker had to be killed because it did not stop in time."""


class ToolFailed(ChatdError):
    """A tool could not do its work; the message is shown to the LLM and client."""


class ClientError(ChatdError):
    """The client sent something malformed or not allowed."""

    code = "bad_request"


class NotFound(ClientError):
    """What the client names does not exist (any more): a request to resume."""

    code = "not_found"


class TooLarge(ClientError):
    """A message or frame is over its configured limit."""

    code = "too_large"


class Unauthorized(ClientError):
    """Missing or wrong credentials."""

    code = "unauthorized"


class RateLimited(ClientError):
    """The caller's rate limit is spent."""

    code = "rate_limited"


class Overloaded(ChatdError):
    """The admission queue is full or the wait for capacity ran out."""

    code = "overloaded"


class ShuttingDown(ChatdError):
    """The server is draining and takes no new work."""

    code = "shutting_down"


class UpstreamUnavailable(ChatdError):
    """A dependency refused us, could not be reached, or its breaker is open."""

    code = "upstream_unavailable"


class BreakerOpen(UpstreamUnavailable):
    """A circuit breaker is open: failing fast without calling the dependency."""


class UpstreamRefused(UpstreamUnavailable):
    """The dependency said it cannot take the call now (HTTP 429 or 503)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str,
        retry_after_ms: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, retry_after_ms=retry_after_ms, detail=detail)
        self.status = status
        self.body = body


class UpstreamError(ChatdError):
    """A dependency answered, but with an error or with garbage."""

    code = "upstream_error"


class UpstreamHTTPError(UpstreamError):
    """The dependency answered with an HTTP error status; its body is kept."""

    def __init__(self, message: str, *, status: int, body: str, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.body = body


class UpstreamProtocolError(UpstreamError):
    """The dependency's stream could not be parsed or ended too early."""


class DeadlineExceeded(ChatdError):
    """Work ran past its deadline."""

    code = "timeout"


class UpstreamTimeout(DeadlineExceeded):
    """A dependency took too long in one phase of a call."""

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


HTTP_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "too_large": 413,
    "rate_limited": 429,
    "overloaded": 503,
    "upstream_unavailable": 503,
    "shutting_down": 503,
    "upstream_error": 502,
    "timeout": 504,
    "internal": 500,
}
"""The HTTP status for each protocol error code."""

_RAISED_AS: dict[str, type[ChatdError]] = {
    cls.code: cls
    for cls in (
        ChatdError,
        ClientError,
        NotFound,
        TooLarge,
        Unauthorized,
        RateLimited,
        Overloaded,
        ShuttingDown,
        UpstreamUnavailable,
        UpstreamError,
        DeadlineExceeded,
    )
}
"""The class a :class:`Failure` of each code is raised as."""


def crash_message(log_id: str | None) -> str:
    """What users read of a bug: that one happened and, given ``log_id`` (a
    request id), where an operator finds it."""
    return f"internal error; the log has it under {log_id}" if log_id else "internal error"


@attrs.frozen
class Failure:
    """An error as data, for whatever outlives the raise: the protocol
    ``code``, the ``message`` users read, the ``retry_after_ms`` hint and the
    ``detail`` only operators read."""

    code: str
    message: str
    retry_after_ms: int | None = None
    detail: str | None = None

    @classmethod
    def of(cls, error: BaseException, log_id: str | None = None) -> Failure:
        """What ``error`` says. Anything but a :class:`ChatdError` is a bug: it
        says only that one happened and, given ``log_id`` (the request id its
        traceback was logged under), where an operator finds it."""
        if not isinstance(error, ChatdError):
            return cls("internal", crash_message(log_id))
        return cls(error.code, error.message, error.retry_after_ms, error.detail)

    @property
    def status(self) -> int:
        """The HTTP status of its code."""
        return HTTP_STATUS.get(self.code, 500)

    def exception(self) -> ChatdError:
        """A fresh exception to raise: of its code's class (a code this version
        does not know is raised as an ``internal`` one)."""
        cls = _RAISED_AS.get(self.code, ChatdError)
        return cls(self.message, retry_after_ms=self.retry_after_ms, detail=self.detail)
