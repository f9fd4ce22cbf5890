"""Credentials: who a client is, and whether it may chat."""

from __future__ import annotations

import hmac

from chatd.redaction import key_id

__all__ = ["identify"]


def identify(
    api_keys: list[str], authorization: str | None, api_key_arg: str | None, remote: str
) -> tuple[str, bool]:
    """Who the client is (for rate limits) and whether its credentials are good.

    The key comes from ``Authorization: Bearer KEY`` or else ``?api_key=KEY``.
    With no ``api_keys`` configured everyone is let in and told apart by key
    or address; otherwise the key must be one of them (compared in constant
    time), and a client without a good key is known by its address only. A
    key is named by its :func:`~chatd.redaction.key_id`, never itself.
    """
    auth = authorization or ""
    supplied = auth[7:].strip() if auth.lower().startswith("bearer ") else (api_key_arg or "")
    if not api_keys:
        # Unchecked keys say nothing about who asks: rotating them must not
        # escape a rate limit. Without configured keys, clients are addresses.
        return f"addr:{remote}", True
    ok = any(hmac.compare_digest(supplied.encode(), key.encode()) for key in api_keys)
    return (f"key:{key_id(supplied)}" if ok else f"addr:{remote}"), ok
