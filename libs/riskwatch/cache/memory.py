"""In-process cache with the same behaviour as the Redis one (TTL, capped streams, pub/sub)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from riskwatch.cache.base import Cache


class InMemoryCache(Cache):
    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._streams: dict[str, deque[bytes]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {}

    async def get(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._values[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self._values[key] = (value, None if ttl_s is None else time.monotonic() + ttl_s)

    async def stream_add(self, key: str, value: bytes, maxlen: int) -> None:
        stream = self._streams.setdefault(key, deque(maxlen=maxlen))
        stream.append(value)

    async def stream_tail(self, key: str, count: int) -> list[bytes]:
        return list(self._streams.get(key, ()))[-count:]

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in self._subscribers.get(channel, ()):
            queue.put_nowait(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.setdefault(channel, set()).add(queue)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            self._subscribers[channel].discard(queue)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
