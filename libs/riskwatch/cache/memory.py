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
        self._streams: dict[str, tuple[deque[bytes], float | None]] = {}
        self._indexes: dict[str, dict[str, float]] = {}
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

    async def stream_add(self, key: str, value: bytes, maxlen: int, ttl_s: int | None = None) -> None:
        stream = self._live_stream(key)
        if stream is None:
            stream = deque(maxlen=maxlen)
        stream.append(value)
        self._streams[key] = (stream, None if ttl_s is None else time.monotonic() + ttl_s)

    async def stream_tail(self, key: str, count: int) -> list[bytes]:
        return list(self._live_stream(key) or ())[-count:]

    def _live_stream(self, key: str) -> deque[bytes] | None:
        item = self._streams.get(key)
        if item is None:
            return None
        stream, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._streams[key]
            return None
        return stream

    async def index_touch(self, key: str, member: str, seen: float) -> None:
        self._indexes.setdefault(key, {})[member] = seen

    async def index_members(self, key: str, since: float) -> list[str]:
        index = self._indexes.get(key, {})
        return [m for m, seen in sorted(index.items(), key=lambda item: (item[1], item[0])) if seen >= since]

    async def index_prune(self, key: str, before: float) -> int:
        index = self._indexes.get(key, {})
        gone = [m for m, seen in index.items() if seen < before]
        for member in gone:
            del index[member]
        return len(gone)

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
