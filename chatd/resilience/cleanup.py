"""Cleanup that must happen: shielded from cancellation, and bounded in time.

A client of Redis or ArangoDB closes its connections in a worker thread (the
libraries are synchronous). Closing runs when its owner exits, and that is
often because it was cancelled (shutdown, a test's deadline): unshielded, the
close would be cancelled before it began and the connections leak. Shielded
without a bound, a close stuck on a dead peer would hang shutdown. So each
close is shielded with a deadline, after which its thread is left to finish
alone and the log says so.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

__all__ = ["CLOSE_WITHIN_S", "close_in_thread"]

log = structlog.get_logger("chatd.resilience")

CLOSE_WITHIN_S = 5.0
"""How long a close may take before its thread is left to finish alone."""


async def close_in_thread(
    what: str,
    close: Callable[[], object],
    *,
    limiter: trio.CapacityLimiter | None = None,
    within_s: float = CLOSE_WITHIN_S,
) -> bool:
    """Run ``close()`` in a worker thread, even when cancelled, for at most
    ``within_s`` seconds (waiting for ``limiter`` included); ``False`` if it
    did not finish in time."""
    with trio.move_on_after(within_s) as bounded:
        bounded.shield = True
        await trio.to_thread.run_sync(close, limiter=limiter, abandon_on_cancel=True)
    if bounded.cancelled_caught:
        log.warning(
            "closing took too long: left to finish in its thread", what=what, within_s=within_s
        )
        return False
    return True
