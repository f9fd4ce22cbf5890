"""The clock: a fixed moment told in words and ISO form, in any IANA timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from chatd.exceptions import ToolFailed
from chatd.llm.types import ToolCall
from chatd.tools import Clock, Tool, ToolContext, ToolRegistry

CONTEXT = ToolContext(request_id="req-1")
MOMENT = datetime(2026, 11, 27, 5, 20, 42, 123456, tzinfo=UTC)


def fixed_clock() -> Clock:
    return Clock(now=lambda: MOMENT)


async def test_default_is_utc() -> None:
    """Without a timezone the answer is UTC, weekday and month in words, ISO to the second."""
    result = await fixed_clock().execute({}, CONTEXT)
    assert result.content == (
        "It is Friday, 27 November 2026, 05:20 UTC (2026-11-27T05:20:42+00:00)."
    )


@pytest.mark.parametrize(
    ("zone", "content"),
    [
        (
            "Europe/Paris",
            "It is Friday, 27 November 2026, 06:20 CET in Europe/Paris "
            "(2026-11-27T06:20:42+01:00).",
        ),
        (
            "Asia/Kolkata",
            "It is Friday, 27 November 2026, 10:50 IST in Asia/Kolkata "
            "(2026-11-27T10:50:42+05:30).",
        ),
        (
            "Pacific/Kiritimati",
            "It is Friday, 27 November 2026, 19:20 +14 in Pacific/Kiritimati "
            "(2026-11-27T19:20:42+14:00).",
        ),
        (
            "America/Los_Angeles",
            "It is Thursday, 26 November 2026, 21:20 PST in America/Los_Angeles "
            "(2026-11-26T21:20:42-08:00).",
        ),
        ("utc", "It is Friday, 27 November 2026, 05:20 UTC (2026-11-27T05:20:42+00:00)."),
        ("", "It is Friday, 27 November 2026, 05:20 UTC (2026-11-27T05:20:42+00:00)."),
    ],
)
async def test_timezones(zone: str, content: str) -> None:
    """Local time in the named zone, across the date line too; UTC spelled any way is UTC."""
    result = await fixed_clock().execute({"timezone": zone}, CONTEXT)
    assert result.content == content


async def test_summer_time_is_applied() -> None:
    """The zone's offset on that date is used (CEST in July)."""
    clock = Clock(now=lambda: datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    result = await clock.execute({"timezone": "Europe/Berlin"}, CONTEXT)
    assert "14:00 CEST in Europe/Berlin (2026-07-01T14:00:00+02:00)" in result.content


async def test_naive_and_foreign_now_values() -> None:
    """A naive ``now`` is taken as UTC; an aware one in another offset is converted."""
    naive = Clock(now=lambda: datetime(2026, 1, 1, 0, 0))
    assert "Thursday, 1 January 2026, 00:00 UTC" in (await naive.execute({}, CONTEXT)).content
    tokyo = timezone(timedelta(hours=9))
    aware = Clock(now=lambda: datetime(2026, 1, 1, 9, 0, tzinfo=tokyo))
    assert "Thursday, 1 January 2026, 00:00 UTC" in (await aware.execute({}, CONTEXT)).content


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe", "../../etc/passwd", "zone.tab"])
async def test_unknown_timezone_fails_in_words(zone: str) -> None:
    """A name that is not an IANA zone is a ToolFailed that says what to use instead."""
    with pytest.raises(ToolFailed, match="unknown timezone") as caught:
        await fixed_clock().execute({"timezone": zone}, CONTEXT)
    assert "IANA name" in caught.value.message


async def test_real_now_is_current() -> None:
    """The default ``now`` is the real time in UTC."""
    result = await Clock().execute({}, CONTEXT)
    assert f"{datetime.now(UTC).year}" in result.content and "UTC" in result.content


async def test_wrong_argument_type_is_refused_by_the_registry() -> None:
    """Through the registry a non-string timezone never reaches the tool."""
    outcome = await ToolRegistry([fixed_clock()]).run(
        ToolCall(id="c", name="clock", arguments='{"timezone": 5}'), CONTEXT
    )
    assert outcome.error == "bad arguments: $.timezone: expected a string, got 5"


def test_clock_is_a_time_bound_tool() -> None:
    """It implements the Tool protocol and is never cached or shared."""
    clock = Clock()
    assert isinstance(clock, Tool)
    assert clock.name == "clock" and clock.time_bound
    assert not (clock.natural_answer or clock.user_bound)
    assert "required" not in clock.parameters
