"""WebSocket pings that stop when the connection closes (a fix to hypercorn 0.18).

hypercorn's ping task sleeps ``websocket_ping_interval`` between pings and
looks whether the stream has closed only when it wakes. Until then the closed
connection's task group, and with it the connection's memory, stays alive:
up to 20 s per closed WebSocket, and a drain waits for hypercorn's whole
grace period whenever any WebSocket has ever connected. Here the ping task
waits in a cancel scope that the stream's close cancels, so a closed
connection ends at once. (A scope, which the wait needs anyway, rather than
an event: the task is one of every idle connection's few.) :func:`install`
is idempotent; ``test_pings.py`` pins the behaviour so a hypercorn upgrade
that changes these internals fails loudly.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import Ping as _Ping

__all__ = ["install"]

_WAIT = "_chatd_ping_wait"


async def _send_pings(self: Any) -> None:
    while not self.closed:
        await self._send_wsproto_event(_Ping())
        with trio.move_on_after(self.config.websocket_ping_interval) as wait:
            self.__dict__[_WAIT] = wait  # the stream's close cancels it from now on
            if not self.closed:  # it may have closed while the ping went out
                await trio.sleep_forever()


def install() -> None:
    """Patch :class:`WSStream` once, for the whole process."""
    if getattr(WSStream, "_chatd_pings", False):
        return
    original = WSStream.handle

    async def handle(self: Any, event: Any) -> None:
        await original(self, event)
        if isinstance(event, StreamClosed) or self.closed:
            wait: trio.CancelScope | None = self.__dict__.get(_WAIT)
            if wait is not None:
                wait.cancel()

    WSStream.handle = handle  # type: ignore[method-assign]
    WSStream._send_pings = _send_pings  # type: ignore[method-assign]
    setattr(WSStream, "_chatd_pings", True)  # noqa: B010
