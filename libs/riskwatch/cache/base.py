"""The cache interface: latest values with a TTL, capped streams for history, an index of members by last-seen
time, and pub/sub for push."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager


class Cache(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None: ...

    @abc.abstractmethod
    async def stream_add(self, key: str, value: bytes, maxlen: int, ttl_s: int | None = None) -> None:
        """Append to a capped stream (oldest entries trimmed beyond `maxlen`); `ttl_s` is refreshed on each write."""

    @abc.abstractmethod
    async def stream_tail(self, key: str, count: int) -> list[bytes]:
        """The newest `count` entries, oldest first."""

    @abc.abstractmethod
    async def index_touch(self, key: str, member: str, seen: float) -> None:
        """Record `member` in the index `key` as last seen at `seen` (epoch seconds)."""

    @abc.abstractmethod
    async def index_members(self, key: str, since: float) -> list[str]:
        """Members of the index seen at or after `since`, oldest first."""

    @abc.abstractmethod
    async def index_prune(self, key: str, before: float) -> int:
        """Remove members last seen before `before`; how many went."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: bytes) -> None: ...

    @abc.abstractmethod
    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Messages published to `channel` after the subscription is established."""

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
