from chatd.config import RedisSettings
from chatd.stores.redis.client import open_redis


async def test_ping(redis_url):
    async with open_redis(RedisSettings(url=redis_url)) as r:
        assert await r.call(lambda c: c.ping())
        await r.call(lambda c, k: c.set(k, "1"), r.key("x"))
        assert await r.call(lambda c: c.get("chatd:x")) == b"1"
