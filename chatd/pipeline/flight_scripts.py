"""The Redis side of a shared flight (:mod:`chatd.pipeline.flights_redis`):
its keys, the scripts that claim, renew and publish it atomically, and the
records its stream holds.

Keys, under the client's prefix::

    flight:{key}                      the lease: the leader's token, PX lease_s
    flight:{key}:{token}              the leader's stream (MAXLEN ~, expires)
    flight:{key}:{token}:followers    zset: follower token -> expiry (Redis ms)

Stream entries are orjson records: ``events`` (a batch, numbered by ``seq``),
then one end: ``outcome``, ``error`` (a :class:`~chatd.exceptions.Failure`:
followers raise an exception of its code's class), ``diverged`` (the router picked a
time- or user-bound tool: followers answer alone, and nothing after it is
shared) or ``abandoned`` (the leader was stopped: shutdown).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
from redis.commands.core import Script

__all__ = [
    "ABANDONED",
    "DIVERGED",
    "RENEW_ABANDONED",
    "RENEW_LOST",
    "STREAM_MAXLEN",
    "record",
    "register",
    "zrem",
]

STREAM_MAXLEN = 4096
"""Records kept per stream (approximately): each is a batch of events."""

# Keys computed inside the scripts (followers from the lease and a token) are
# fine on one Redis; chatd does not use Redis Cluster.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)"
_CLAIM = f"""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
local leader = redis.call('GET', KEYS[1])
local followers = KEYS[1] .. ':' .. leader .. ':followers'
{_NOW}
redis.call('ZADD', followers, now + ARGV[3], ARGV[1])
redis.call('PEXPIRE', followers, ARGV[3])
return leader
"""
_RENEW = f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
{_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local followers = redis.call('ZCARD', KEYS[2])
if followers == 0 and ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  return -2
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return followers
"""
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[i])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
return 1
"""
_HEARTBEAT = f"""
{_NOW}
local alive = {{}}
for i = 1, #KEYS / 2 do
  if redis.call('GET', KEYS[2 * i - 1]) == ARGV[2 * i] then
    redis.call('ZADD', KEYS[2 * i], now + ARGV[1], ARGV[2 * i + 1])
    redis.call('PEXPIRE', KEYS[2 * i], ARGV[1])
    alive[i] = 1
  else
    alive[i] = 0
  end
end
return alive
"""
RENEW_LOST, RENEW_ABANDONED = -1, -2
DIVERGED = orjson.dumps({"kind": "diverged"})
ABANDONED = orjson.dumps({"kind": "abandoned"})


def zrem(client: redis.Redis, key: str, member: str) -> Any:
    """Remove ``member`` from the zset ``key`` (run on a client thread)."""
    return client.zrem(key, member)


def record(kind: str, body: object) -> bytes:
    """A stream record: ``{"kind": kind, kind: body}``."""
    return orjson.dumps({"kind": kind, kind: body})


def register(client: redis.Redis) -> dict[str, Script]:
    """The scripts, by name, registered on ``client``."""
    sources = {"claim": _CLAIM, "renew": _RENEW, "publish": _PUBLISH, "heartbeat": _HEARTBEAT}
    return {name: client.register_script(source) for name, source in sources.items()}
