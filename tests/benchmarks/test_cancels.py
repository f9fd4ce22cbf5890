"""Matching cancels to upstream closes (benchmarks/loadgen/cancels.py, closewatch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from loadgen.cancels import match_closes, read_closes
from loadgen.closewatch import LastRequest


def close(at: float, message: str | None, by: str = "client") -> dict[str, object]:
    return {"event": "closed", "at": at, "by": by, "message": message}


def test_each_cancel_takes_the_first_close_of_its_message_after_it() -> None:
    closes = [close(10.004, "a"), close(10.5, "a"), close(11.02, "b")]
    matched = match_closes([("a", 10.0), ("b", 11.0)], closes)
    assert [round(d, 3) for d in matched["delays_s"]] == [0.004, 0.02]
    assert matched["no_close_seen"] == matched["closed_before"] == 0


def test_a_close_only_before_the_cancel_is_counted_apart() -> None:
    matched = match_closes([("a", 10.0)], [close(9.9, "a")])
    assert matched == {"delays_s": [], "no_close_seen": 0, "closed_before": 1}


def test_closes_by_the_simulator_or_without_a_message_do_not_count() -> None:
    closes = [close(10.1, "a", by="target"), close(10.2, None)]
    matched = match_closes([("a", 10.0)], closes)
    assert matched == {"delays_s": [], "no_close_seen": 1, "closed_before": 0}


def test_read_closes_keeps_only_closed_lines(tmp_path: Path) -> None:
    log = tmp_path / "closewatch.log"
    lines = [{"event": "listening", "url": "http://x"}, close(1.0, "a")]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert read_closes(log) == [close(1.0, "a")]


def request(message: str) -> bytes:
    body = orjson.dumps({"messages": [{"role": "system", "content": "be kind"},
                                      {"role": "user", "content": message}]})  # fmt: skip
    head = f"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_last_request_names_the_user_message_across_reads() -> None:
    seen = LastRequest()
    data = request("first question") + request("second question")
    for i in range(0, len(data), 7):  # arbitrary read boundaries
        seen.feed(data[i : i + 7])
    assert seen.message() == "second question"


def test_last_request_without_a_whole_body_has_no_message() -> None:
    seen = LastRequest()
    seen.feed(request("cut short")[:-5])
    assert seen.message() is None
