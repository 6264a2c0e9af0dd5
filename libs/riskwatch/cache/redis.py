"""Redis cache over redis-py's asyncio client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from riskwatch.cache.base import Cache
from riskwatch.errors import Unavailable


class RedisCache(Cache):
    """Every Redis failure surfaces as `Unavailable`, so callers degrade on one exception type."""

    def __init__(self, url: str, prefix: str = "riskwatch:") -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10)
        self._prefix = prefix

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        try:
            value: Any = await self._redis.get(self._k(key))  # bytes: the client does not decode responses
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        try:
            await self._redis.set(self._k(key), value, ex=ttl_s)
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

    async def stream_add(self, key: str, value: bytes, maxlen: int, ttl_s: int | None = None) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self._k(key), {"v": value}, maxlen=maxlen, approximate=False)
                if ttl_s is not None:
                    pipe.expire(self._k(key), ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

    async def index_touch(self, key: str, member: str, seen: float) -> None:
        try:
            await self._redis.zadd(self._k(key), {member: seen})
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

    async def index_members(self, key: str, since: float) -> list[str]:
        try:
            members: Any = await self._redis.zrangebyscore(self._k(key), since, "+inf")
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc
        return [bytes(m).decode("utf-8", "replace") for m in members or []]

    async def index_prune(self, key: str, before: float) -> int:
        try:
            # "(" makes the bound exclusive: a member seen exactly at `before` stays.
            return int(await self._redis.zremrangebyscore(self._k(key), "-inf", f"({before}"))
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

    async def stream_tail(self, key: str, count: int) -> list[bytes]:
        try:
            entries: Any = await self._redis.xrevrange(self._k(key), count=count)
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc
        # Without decode_responses, redis-py returns bytes field names and values.
        return [bytes(fields[b"v"]) for _id, fields in reversed(entries or [])]

    async def publish(self, channel: str, message: bytes) -> None:
        try:
            await self._redis.publish(self._k(channel), message)
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._k(channel))
        except RedisError as exc:
            raise Unavailable(f"Failed to connect to Redis ({exc})") from exc

        async def messages() -> AsyncIterator[bytes]:
            try:
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        yield item["data"]
            except RedisError as exc:
                raise Unavailable(f"Redis subscription lost ({exc})") from exc

        try:
            yield messages()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
