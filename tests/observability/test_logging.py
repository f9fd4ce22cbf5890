"""Log set-up: JSON lines keep a summary's spans for chatd trace; a terminal's lines do not."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
import structlog

from chatd.config import LogSettings, ServerSettings
from chatd.observability import configure_logging
from chatd.server.origins import warn_if_open


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


def test_startup_lines_reach_the_terminal_when_the_log_is_a_file(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With log.file set, 'listening' and start-up warnings are on stderr too;
    other lines only in the file."""
    saved = structlog.get_config()
    path = tmp_path / "chatd.log"
    with path.open("a", encoding="utf-8") as file:
        configure_logging(LogSettings(file=str(path)), stream=file)
        try:
            log = structlog.get_logger("chatd.server")
            log.info("listening", url="http://127.0.0.1:8080", startup=True)
            log.info("request summary", request_id="req_1")
            warn_if_open(ServerSettings(host="0.0.0.0"))
        finally:
            structlog.configure(**saved)
    terminal = capsys.readouterr().err
    assert "listening" in terminal and "http://127.0.0.1:8080" in terminal
    assert "no API keys" in terminal
    assert "request summary" not in terminal
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines][:2] == ["listening", "request summary"]
    assert all("startup" not in line for line in lines)


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [("0.0.0.0", [], True), ("0.0.0.0", ["k"], False), ("127.0.0.1", [], False)],
)
def test_open_host_without_keys_is_warned(host: str, keys: list[str], warned: bool) -> None:
    with structlog.testing.capture_logs() as logs:
        warn_if_open(ServerSettings(host=host, api_keys=keys))
    assert any(line["log_level"] == "warning" for line in logs) is warned
