"""Cache: one interface, a Redis implementation and an in-memory one."""

from riskwatch.cache.base import Cache
from riskwatch.cache.memory import InMemoryCache
from riskwatch.cache.redis import RedisCache

__all__ = ["Cache", "InMemoryCache", "RedisCache"]
