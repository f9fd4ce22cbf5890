"""The registry of requests in flight, their states, and their state deadlines.

Every request is registered for its whole life with the state it is in
(``preparing``, ``queued``, ``routing``, ``tools``, ``streaming``) and when it
entered it. :meth:`RequestRegistry.sweep`, called by the janitor, cancels a
request that stayed in one state past that state's deadline; the request
then ends with ``timeout`` and says why.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import attrs
import trio

from chatd.config import JanitorSettings
from chatd.resilience.janitor import Reap

__all__ = ["RequestRegistry", "RequestState", "TrackedRequest"]

RequestState = Literal["preparing", "queued", "routing", "tools", "streaming"]


@attrs.define(eq=False)
class TrackedRequest:
    """One request as the janitor sees it."""

    request_id: str
    state: RequestState
    since: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    reaped: str | None = None

    def enter(self, state: RequestState) -> None:
        """The request moved on to ``state``."""
        if state != self.state:
            self.state, self.since = state, trio.current_time()


@attrs.define
class RequestRegistry:
    """Requests by id; reaps the stuck."""

    settings: JanitorSettings
    _requests: dict[str, TrackedRequest] = attrs.field(factory=dict, init=False)
    _empty: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._empty.set()

    @contextmanager
    def track(self, request_id: str) -> Iterator[TrackedRequest]:
        """Register a request for the block's duration; cancel ``tracked.scope``
        to reap it."""
        tracked = TrackedRequest(request_id, "preparing", trio.current_time())
        if not self._requests:
            self._empty = trio.Event()
        self._requests[request_id] = tracked
        try:
            yield tracked
        finally:
            del self._requests[request_id]
            if not self._requests:
                self._empty.set()

    async def wait_empty(self) -> None:
        """Return once no request is in flight."""
        await self._empty.wait()

    def cancel_all(self) -> int:
        """Cancel every request (a drain's grace ran out); they end ``cancelled``."""
        for tracked in self._requests.values():
            tracked.scope.cancel()
        return len(self._requests)

    def sweep(self) -> list[Reap]:
        """Cancel every request past its state's deadline; what was reaped."""
        now = trio.current_time()
        reaps = []
        for tracked in self._requests.values():
            limit = self.settings.stuck_after_s(tracked.state)
            if tracked.reaped is None and now - tracked.since > limit:
                tracked.reaped = f"{tracked.state} for more than {limit:g} s"
                tracked.scope.cancel()
                reaps.append(Reap("request", tracked.request_id, f"stuck {tracked.state}"))
        return reaps

    def __len__(self) -> int:
        return len(self._requests)

    def statistics(self) -> dict[str, int]:
        """How many requests are in each state."""
        return dict(collections.Counter(t.state for t in self._requests.values()))
