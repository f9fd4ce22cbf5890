"""Who a request is from, behind trusted proxies."""

from __future__ import annotations

import pytest

from chatd.config import ServerSettings
from chatd.config.settings import InvalidSetting
from chatd.server.auth import client_address

PROXIES = ["10.0.0.0/8", "192.168.1.7"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "client"),
    [
        # No trusted proxies: the header is anyone's to write.
        ("10.1.2.3", "203.0.113.9", [], "10.1.2.3"),
        # A peer that is not a trusted proxy is the client, whatever it says.
        ("198.51.100.4", "203.0.113.9", PROXIES, "198.51.100.4"),
        ("10.1.2.3", None, PROXIES, "10.1.2.3"),
        ("10.1.2.3", "203.0.113.9", PROXIES, "203.0.113.9"),
        # Read from the right: what the client wrote itself (left) is passed over.
        ("10.1.2.3", "1.1.1.1, 203.0.113.9", PROXIES, "203.0.113.9"),
        # Our own proxies in the chain are skipped.
        ("10.1.2.3", "203.0.113.9, 192.168.1.7, 10.9.9.9", PROXIES, "203.0.113.9"),
        ("10.1.2.3", "2001:db8::1", PROXIES, "2001:db8::1"),
        # Every hop ours: the farthest one.
        ("10.1.2.3", "10.0.0.1, 10.0.0.2", PROXIES, "10.0.0.1"),
        # Garbage ends the walk at the proxy that passed it on.
        ("10.1.2.3", "203.0.113.9, not-an-address", PROXIES, "10.1.2.3"),
        ("10.1.2.3", "not-an-address, 10.0.0.4", PROXIES, "10.0.0.4"),
        ("unknown", "203.0.113.9", PROXIES, "unknown"),
    ],
)
def test_client_address(
    peer: str, forwarded_for: str | None, trusted: list[str], client: str
) -> None:
    assert client_address(peer, forwarded_for, trusted) == client


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    ServerSettings(trusted_proxies=["127.0.0.1", "10.0.0.0/8", "::1"])
    with pytest.raises(InvalidSetting, match="trusted_proxies"):
        ServerSettings(trusted_proxies=["proxy.internal"])
