"""structlog set-up: JSON lines, or a readable console form on a terminal.

``request_id`` and connection ids reach every line through contextvars
(``structlog.contextvars.bind_contextvars``), so nothing passes loggers around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from chatd.config import LogSettings
from chatd.redaction import redact

__all__ = ["configure_logging"]


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def _without_spans(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """On a terminal a summary line leaves its spans out (a JSON log keeps
    them, for ``chatd trace``): a person reads the timings already there."""
    event.pop("spans", None)
    return event


def _redacted(_logger: Any, _name: str, line: Any) -> Any:
    """The rendered line (the renderer's string) with its secrets masked
    (:mod:`chatd.redaction`)."""
    return redact(line)


class _StartupToTerminal:
    """Lines logged with ``startup=True`` (where it listens, start-up warnings)
    also go to the terminal (stderr) when the log goes to a file: whoever
    started chatd sees them there."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    def __call__(
        self, logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.pop("startup", False) and self.echo:
            line = self.renderer(logger, name, dict(event))
            print(redact(str(line)), file=sys.stderr, flush=True)
        return event


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Send structlog's output to ``stream`` (or ``settings.file``, or stdout)."""
    if stream is None:
        stream = (
            open(settings.file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            if settings.file
            else sys.stdout
        )
    console = settings.format == "console" or (settings.format == "auto" and stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _StartupToTerminal(echo=bool(settings.file) and stream is not sys.stdout),
        *([_without_spans] if console else []),
        renderer,
        _redacted,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, settings.level.upper())
        ),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
