"""A closed WebSocket ends its connection at once (chatd.server.pings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import trio

from chatd.testing import open_chat_client, wait_until


async def test_drain_after_a_websocket_does_not_wait_for_the_grace(tmp_path: Path) -> None:
    """hypercorn's ping task used to keep a closed WebSocket's connection alive
    until its next ping (20 s), so a drain always waited out the whole grace
    (here 60 s). With pings that stop on close, SIGTERM exits well before."""
    log = tmp_path / "chatd.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chatd", "serve", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={
                **os.environ,
                "CHATD_LOG_FORMAT": "json",
                "CHATD_SERVER_SHUTDOWN_GRACE_S": "60",
                "CHATD_SERVER_WEBSOCKET_PING_INTERVAL_S": "30",
            },
        )
    try:

        def lines() -> list[dict[str, object]]:
            return [orjson.loads(x) for x in log.read_bytes().splitlines() if x.startswith(b"{")]

        await wait_until(lambda: any(x.get("event") == "listening" for x in lines()), within=30)
        url = next(str(x["url"]) for x in lines() if x.get("event") == "listening")
        async with open_chat_client(url.replace("http", "ws", 1) + "/v1/ws") as client:
            await client.chat("a", "hello")
            assert (await client.finish("a"))["type"] == "done"
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await wait_until(lambda: proc.poll() is not None, within=20)
        assert proc.poll() == 0, "chatd waited for the grace period after its last WebSocket"
    finally:
        if proc.poll() is None:
            proc.kill()
        await proc.wait()
