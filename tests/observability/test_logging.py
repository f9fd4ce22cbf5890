"""Log set-up: JSON lines keep a summary's spans for chatd trace; a terminal's lines do not."""

from __future__ import annotations

import io

import orjson
import pytest
import structlog

from chatd.config import LogSettings
from chatd.observability import configure_logging


@pytest.mark.parametrize("form", ["json", "console"])
def test_summary_spans_only_in_json(form: str) -> None:
    """The same summary: its spans in the JSON line, left out on the console."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging(LogSettings(format=form), stream=stream)  # type: ignore[arg-type]
    try:
        structlog.get_logger("chatd.trace").info(
            "request summary", request_id="req_1", total_ms=3.0, spans=[{"span": "router"}]
        )
    finally:
        structlog.configure(**saved)
    line = stream.getvalue()
    if form == "json":
        assert orjson.loads(line)["spans"] == [{"span": "router"}]
    else:
        assert "req_1" in line and "total_ms" in line and "spans" not in line
