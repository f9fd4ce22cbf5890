"""What a request is and where its events go: :class:`ChatInput` (a ``chat``
as the client sent it, and whose session it names), :class:`RequestOutput`,
and :class:`CachedAnswer` (a finished answer kept for identical questions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from chatd.llm import Message
from chatd.pipeline.events import Event, encode
from chatd.pipeline.turn import Outcome

__all__ = ["CachedAnswer", "ChatInput", "RequestOutput", "unguessable"]


class RequestOutput(Protocol):
    """Where a request's events go (the connection binds the request's id)."""

    async def send(self, event: Event) -> None:
        """Send an event, waiting for room."""
        ...

    def send_nowait(self, event: Event) -> None:
        """Send an advisory event if there is room (queue positions)."""
        ...

    def try_send(self, event: Event) -> bool:
        """Send if that needs no waiting; ``False``, and nothing sent, if it
        would wait (an output without such a fast path always says ``False``)."""
        ...


@attrs.frozen
class CachedAnswer:
    """A finished answer kept for identical questions: its events and how it ended."""

    events: tuple[Event, ...]
    outcome: Outcome

    def nbytes(self) -> int:
        """About what it holds: its events as the wire would carry them."""
        return sum(len(encode(event, None)) for event in self.events)


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def unguessable(session: str) -> bool:
    """A session name long and varied enough to be a secret of its own: 22 or
    more URL-safe characters, letters and digits both (a random UUID, or
    ``secrets.token_urlsafe(16)``: ~128 bits when random)."""
    return (
        len(session) >= 22
        and set(session) <= _TOKEN_CHARS
        and any(c.isdigit() for c in session)
        and any(c.isalpha() for c in session)
    )


@attrs.frozen
class ChatInput:
    """A ``chat`` as the client sent it, plus who sent it."""

    id: str
    message: str
    session: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    client: str = "anonymous"
    scope: str = ""
    """Where a guessable session name of a keyless client is valid: its
    connection (WebSocket), or this request alone (HTTP)."""
    history: tuple[Message, ...] = ()
    """Earlier turns the client sent itself (OpenAI's ``messages``): the
    conversation before ``message``, in place of the session's stored one."""

    @property
    def session_key(self) -> str:
        """Where the session's history is kept, so nobody else can read it by
        naming it: a client with a key, under its key; a name nobody can guess
        (:func:`unguessable`), under that name, from any connection; any other
        name of a keyless client (known only by an address others may share),
        under its address and connection."""
        if self.client.startswith("key:"):
            return f"{self.client}/{self.session}"
        if self.session is not None and unguessable(self.session):
            return f"token/{self.session}"
        return f"{self.client}/{self.scope}/{self.session}"
