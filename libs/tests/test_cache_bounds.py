"""Cache state that would grow with every camera id: alert streams expire, the camera index shrinks (both caches)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from riskwatch.cache import Cache, InMemoryCache, RedisCache
from tests.support.stack import REDIS_URL


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.infra)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield InMemoryCache()
        return
    prefix = f"rw-test-{uuid.uuid4().hex[:8]}:"
    redis_cache = RedisCache(REDIS_URL, prefix=prefix)
    yield redis_cache
    await redis_cache.close()
    raw = aioredis.Redis.from_url(REDIS_URL)
    async for key in raw.scan_iter(match=f"{prefix}*"):
        await raw.delete(key)
    await raw.aclose()


async def test_a_stream_expires_unless_written_again(cache: Cache) -> None:
    await cache.stream_add("alerts:a", b"1", maxlen=10, ttl_s=1)
    await cache.stream_add("alerts:b", b"1", maxlen=10, ttl_s=1)
    await asyncio.sleep(0.6)
    await cache.stream_add("alerts:b", b"2", maxlen=10, ttl_s=1)  # refreshes b's TTL
    await asyncio.sleep(0.7)
    assert await cache.stream_tail("alerts:a", 10) == []
    assert await cache.stream_tail("alerts:b", 10) == [b"1", b"2"]


async def test_the_index_lists_members_by_last_seen_and_prunes_the_idle(cache: Cache) -> None:
    await cache.index_touch("cameras", "cam-a", 100.0)
    await cache.index_touch("cameras", "cam-b", 200.0)
    await cache.index_touch("cameras", "cam-c", 150.0)
    await cache.index_touch("cameras", "cam-a", 300.0)  # seen again: not duplicated, moved
    assert await cache.index_members("cameras", since=0) == ["cam-c", "cam-b", "cam-a"]
    assert await cache.index_members("cameras", since=200) == ["cam-b", "cam-a"]
    assert await cache.index_prune("cameras", before=200) == 1
    assert await cache.index_members("cameras", since=0) == ["cam-b", "cam-a"]


@pytest.mark.infra
async def test_redis_alert_stream_has_a_ttl_and_its_cap() -> None:
    prefix = f"rw-test-{uuid.uuid4().hex[:8]}:"
    cache = RedisCache(REDIS_URL, prefix=prefix)
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        for i in range(5):
            await cache.stream_add("alerts:cam", str(i).encode(), maxlen=3, ttl_s=600)
        assert 590 <= await raw.ttl(f"{prefix}alerts:cam") <= 600
        assert await raw.xlen(f"{prefix}alerts:cam") == 3
    finally:
        await raw.delete(f"{prefix}alerts:cam")
        await raw.aclose()
        await cache.close()
