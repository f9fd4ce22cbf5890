"""Keys kept as hashes, and the operators' endpoints behind an operator key
(issue 15, item 5)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import trio

from chatd.config import ServerSettings
from chatd.redaction import key_hash
from chatd.server.auth import identify, key_matches
from chatd.testing import open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings


def test_hashed_and_plain_keys_match() -> None:
    """A configured key may be the key or its hash; neither lets the wrong key in."""
    keys = [key_hash("ck_client"), "plain-key"]
    assert key_matches("ck_client", keys) and key_matches("plain-key", keys)
    assert not key_matches("ck_other", keys) and not key_matches("", keys)
    assert not key_matches(key_hash("ck_client"), keys)  # the hash is not a key
    client, ok = identify(keys, "Bearer ck_client", None, "10.0.0.1")
    assert ok and client.startswith("key:k_") and "ck_client" not in client


def test_keys_new_prints_a_key_and_its_hash() -> None:
    """``chatd keys new``: a fresh key and the hash to configure."""
    out = subprocess.run(
        [sys.executable, "-m", "chatd", "keys", "new"], capture_output=True, text=True, check=True
    ).stdout
    key = out.split("key:", 1)[1].split()[0]
    assert key.startswith("ck_") and len(key) > 30
    assert f"hash: {key_hash(key)}" in out


async def test_a_hashed_key_lets_its_client_chat(make_settings: MakeSettings) -> None:
    """A client whose key is configured only as its hash chats."""
    settings = make_settings(server=ServerSettings(api_keys=[key_hash("ck_secret_1")]))
    async with (
        open_chatd(settings) as chatd,
        open_chat_client(chatd.ws_url + "?api_key=ck_secret_1") as client,
    ):
        with trio.fail_after(10):
            await client.chat("a", "hello there")
            assert (await client.finish("a"))["type"] == "done"


async def test_operator_endpoints_need_an_operator_key(make_settings: MakeSettings) -> None:
    """With keys set, /metrics needs an operator key and /readyz shows only its
    status without one; a client's key is not an operator's; /healthz is open."""
    settings = make_settings(
        server=ServerSettings(api_keys=["client-key-1"], operator_keys=[key_hash("op-key-1")])
    )
    async with open_chatd(settings) as chatd, httpx.AsyncClient(base_url=chatd.url) as http:
        client = {"Authorization": "Bearer client-key-1"}
        operator = {"Authorization": "Bearer op-key-1"}
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=client)).status_code == 401
        assert (await http.get("/metrics", headers=operator)).status_code == 200
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        detailed = (await http.get("/readyz", headers=operator)).json()
        assert "dependencies" in detailed and "connections" in detailed
        assert (await http.get("/healthz")).status_code == 200
