"""WebSocket compression off unless asked for (hypercorn 0.18 always accepts it).

Browsers offer permessage-deflate on every WebSocket, and hypercorn accepts
it with no setting to say no. For chatd's frames it is a poor trade: a token
frame is a few dozen bytes, so compressing each costs CPU for next to no
saving, and wsproto keeps a zlib compressor and decompressor per connection
(context takeover): measured, an idle connection that had asked one question
held 151 KiB with deflate against 46 KiB without. :func:`install` makes
hypercorn's handshake ignore the offer unless ``server.websocket_deflate`` is
set; the client then speaks plain frames, as the RFC provides.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol.ws_stream import Handshake

__all__ = ["install"]

_ORIGINAL = Handshake.accept


def install(*, deflate: bool) -> None:
    """Accept permessage-deflate only if ``deflate`` (for the whole process)."""
    if deflate:
        Handshake.accept = _ORIGINAL  # type: ignore[method-assign]
        return

    def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.extensions = None  # as if none were offered: nothing is negotiated
        return _ORIGINAL(self, *args, **kwargs)

    Handshake.accept = accept  # type: ignore[method-assign]
