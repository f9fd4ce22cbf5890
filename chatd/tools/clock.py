"""The ``clock`` tool: today's date and the time, in any IANA timezone.

LLMs do not know what time it is. The answer names the weekday in words (the
thing models most often get wrong when working it out themselves) and gives
the ISO 8601 form as well. Its result changes by the minute, so it is
``time_bound``: a request that uses it is neither cached nor shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import trio

from chatd.exceptions import ToolFailed
from chatd.tools.base import BuiltinTool, ToolContext, ToolResult, stream_text, string_argument

__all__ = ["Clock", "describe_time"]

# Spelled out rather than strftime's %A and %B, which follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_UTC_NAMES = frozenset({"UTC", "Z", "GMT", "ETC/UTC", "UNIVERSAL", "ZULU"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _zone(name: str) -> tzinfo:
    """The timezone called ``name`` (IANA, e.g. ``Europe/Paris``); ``UTC`` in any case."""
    if name.upper() in _UTC_NAMES:
        return UTC
    # ZoneInfo reads a small file once per zone and caches it: not worth a thread hop.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # ValueError: a key that is not a relative path ("../x") or names a file
        # of the tz database that is not a zone ("zone.tab").
        raise ToolFailed(
            f"unknown timezone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from exc


def describe_time(moment: datetime, zone_name: str | None = None) -> str:
    """``It is Friday, 27 November 2026, 05:20 UTC (2026-11-27T05:20:00+00:00).``"""
    where = f" in {zone_name}" if zone_name else ""
    return (
        f"It is {_WEEKDAYS[moment.weekday()]}, {moment.day} {_MONTHS[moment.month - 1]} "
        f"{moment.year}, {moment:%H:%M} {moment.tzname()}{where} "
        f"({moment.isoformat(timespec='seconds')})."
    )


@attrs.frozen
class Clock(BuiltinTool):
    """Tells the date and time; ``now`` is injectable so tests can fix the moment.

    ``now`` should return an aware datetime; a naive one is taken as UTC.
    """

    name: ClassVar[str] = "clock"
    description: ClassVar[str] = (
        "Get the current date, weekday and time. Give an IANA timezone such as "
        "'Europe/Paris' for local time; the default is UTC."
    )
    parameters: ClassVar[Mapping[str, Any]] = string_argument(
        "timezone",
        "IANA timezone name, e.g. 'America/New_York'. Default: UTC.",
        required=False,
        maxLength=64,
    )
    time_bound: ClassVar[bool] = True
    now: Callable[[], datetime] = _utc_now
    timeout_s: float | None = None

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """The time now in ``arguments["timezone"]`` (UTC by default)."""
        name = str(arguments.get("timezone") or "UTC").strip() or "UTC"
        zone = _zone(name)
        moment = self.now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(zone)
        return ToolResult(content=describe_time(moment, None if zone is UTC else name))

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        """Send the answer as text."""
        await stream_text(result.answer or result.content, send)
