"""Credentials: who a client is, and whether it may chat or operate.

A configured key is the key itself or, better, its hash (``sha256:<hex>``,
which ``chatd keys new`` prints beside a fresh key): then the configuration
holds nothing that would let its reader in. Either way keys are compared in
constant time, and a key is named by its :func:`~chatd.redaction.key_id`
(in logs, metrics, rate limits and Redis), never itself.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Sequence

from chatd.redaction import key_hash, key_id

__all__ = ["client_address", "identify", "key_matches", "supplied_key"]


def supplied_key(authorization: str | None, api_key_arg: str | None) -> str:
    """The key a request carries: ``Authorization: Bearer KEY``, else ``?api_key=KEY``."""
    auth = authorization or ""
    return auth[7:].strip() if auth.lower().startswith("bearer ") else (api_key_arg or "")


def key_matches(supplied: str, keys: Sequence[str]) -> bool:
    """Whether ``supplied`` is one of ``keys`` (each a key or ``sha256:<hex>``)."""
    if not supplied:
        return False
    hashed = key_hash(supplied).encode()
    return any(
        hmac.compare_digest(
            hashed if key.startswith("sha256:") else supplied.encode(), key.encode()
        )
        for key in keys
    )


def identify(
    api_keys: Sequence[str], authorization: str | None, api_key_arg: str | None, remote: str
) -> tuple[str, bool]:
    """Who the client is (for rate limits) and whether its credentials are good.

    With no ``api_keys`` configured everyone is let in and told apart by
    address; otherwise the key must be one of them, and a client without a
    good key is known by its address only.
    """
    if not api_keys:
        # Unchecked keys say nothing about who asks: rotating them must not
        # escape a rate limit. Without configured keys, clients are addresses.
        return f"addr:{remote}", True
    supplied = supplied_key(authorization, api_key_arg)
    ok = key_matches(supplied, api_keys)
    return (f"key:{key_id(supplied)}" if ok else f"addr:{remote}"), ok


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[str]) -> str:
    """The address a request comes from: ``peer``, unless ``peer`` is one of
    ``trusted_proxies`` and says in ``X-Forwarded-For`` whom it forwards.

    Each proxy appends the address it heard from, so the list is read from the
    right: proxies of ours are passed over, and the first address that is not
    one is the client (anything left of it, the client may have written). An
    entry that is not an address ends the walk at the proxy that wrote it.
    """
    if not forwarded_for or not trusted_proxies:
        return peer
    networks = _networks(tuple(trusted_proxies))
    if not _trusted(peer, networks):
        return peer
    address = peer
    for entry in reversed(forwarded_for.split(",")):
        entry = entry.strip()
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            return address
        address = entry
        if not _trusted(entry, networks):
            return entry
    return address
